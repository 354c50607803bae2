"""`s2p serve`: a local web page that paints sketches with an exported generator.

`app.py` is the FastAPI app (endpoints, the one-model painting queue);
`server.py` holds the limits, binds the socket and runs uvicorn; `static/` is the
hand-written front end (HTML, one script, one style sheet; no CDN, no web fonts).
"""
