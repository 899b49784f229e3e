"""The family and installer web page (Starlette + Jinja2, server-rendered, no JavaScript)."""
