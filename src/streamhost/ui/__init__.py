"""The chat UI (``app.py``, run by Streamlit) and the pieces it shares with the terminal
commands: endpoints and their API, request bodies and streamed answers with their timings,
conversations, and readable errors. Importing this package does not import Streamlit."""
