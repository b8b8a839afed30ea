/** Requests sent to the object store by this process (S3: one per SDK command, retries not counted); reported by expire. */
export const storageRequests = { count: 0 };
