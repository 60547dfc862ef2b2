"""Rate limiters behind the ``RateLimiter`` port: in-process buckets, or buckets in Redis shared by
every API process."""
