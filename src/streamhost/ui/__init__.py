"""The Streamlit chat UI (``app.py``, run by Streamlit) and its settings. What it shares with
the terminal commands is in :mod:`streamhost.endpoints`. Importing this package does not
import Streamlit."""
