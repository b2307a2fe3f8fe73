"""The S3 settings, moved to the config layer (``httpupload.config_s3``).

# moved to httpupload/config_s3.py in #11; the lead removes this shim
"""

from httpupload.config_s3 import DAY, MIN_PART_SIZE, MiB, S3Settings

__all__ = ["DAY", "MIN_PART_SIZE", "MiB", "S3Settings"]
