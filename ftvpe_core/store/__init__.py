"""The run store: runs, their metrics, samples and artifacts in SQLite under the data folder (``runs``), the class
challenges' tables (``challenge_tables``), the fair queue's order (``schedule``), learners' names (``names``) and the
shipped recorded runs (``recordings``). Imports only ``settings``.
"""
