"""Placeholder: being written now."""

from starlette.routing import Route

routes: list[Route] = []
