"""The Streamlit chat UI (``app.py``, run by Streamlit), its settings, and how ``streamhost
ui`` and ``up`` serve it (``launch.py``). What it shares with the terminal commands is in
:mod:`streamhost.endpoints`. Importing this package does not import Streamlit."""
