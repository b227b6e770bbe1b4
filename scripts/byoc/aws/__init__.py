"""Talking to SageMaker and S3 with boto3 (no SageMaker Python SDK).

Each module builds its request dicts in plain functions (so ``--dry-run`` can print exactly what
would be sent) and sends them in separate, small functions that take a boto3 client.
"""
