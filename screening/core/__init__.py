"""The core: the call model, numbers, pure rules, caller-ID parsers, line protocols and
events, time and text helpers. Everything may import it; it imports nothing of ours."""
