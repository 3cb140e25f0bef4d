# Starts the LocalStack runtime as `python -m localstack.runtime.main` would, after one
# setting its environment variables cannot make: when its S3 service starts, LocalStack asks
# DNS whether s3.localhost.localstack.cloud resolves, a lookup that leaves the machine. The
# answer is recorded here as "no", so its internal S3 client addresses localhost directly.
from localstack.utils.aws import aws_stack

aws_stack.CACHE_S3_HOSTNAME_DNS_STATUS = False

from localstack.runtime.main import main  # noqa: E402  (after the setting above, on purpose)

main()
