"""Formats and policies that cross a process boundary, free of Django.

The gateway, the local agent and the control plane all import from here, so a rule such as "which addresses a
tenant may make us connect to" or "which environment variables a replica may be given" is written once.
"""
