"""Serving: many soft prompts over one frozen model, mixed-task batching, ensembles.

    softprompt serve --library DIR        # app.py (HTTP), scheduler.py (batching), library.py (prompts)
    softprompt.serve.client.Client(url)   # client.py

Needs the `serve` extras (fastapi, uvicorn, httpx, prometheus-client).
"""

API_KEY_HEADER = "X-API-Key"
