"""What the terminal commands and the chat UI share to use a gateway's endpoints with boto3.

``clients`` (where the gateway is, boto3 clients for it), ``discovery`` (the endpoints it
hosts and the API each one speaks), ``invocation`` (request bodies, streamed answers with
their timings, sessions), ``conversation`` (the prompt a conversation becomes) and
``errors`` (every failure as one sentence). Depends on :mod:`streamhost.client` and botocore
only: importing it imports neither Streamlit nor the gateway package.
"""
