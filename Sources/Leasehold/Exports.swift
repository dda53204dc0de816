// One import for handler authors: the job framework, the election beneath it and the Redis
// client its `LeaseContext` hands out.
@_exported import LeaseholdElection
