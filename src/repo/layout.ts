/**
 * Where things live in a repository. This module is the only one that spells out keys;
 * docs/FORMAT.md describes the same layout for independent readers.
 */
export const REPO_FORMAT_VERSION = 1;

export const IDENTITY_KEY = 'pgark.json';
export const STREAMS_PREFIX = 'streams/';
/** Written by `pgark check` to prove write access, then deleted. */
export const CHECK_PREFIX = 'check/';

const STREAM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

export function isValidStreamName(name: string): boolean {
  return STREAM_NAME.test(name) && !name.includes('..');
}

export function streamManifestKey(name: string): string {
  return `${STREAMS_PREFIX}${name}/manifest.json`;
}

/** Data objects carry a unique tag, so an interrupted upload never collides with a later one. */
export function streamDataKey(name: string, tag: string, suffix: string): string {
  return `${STREAMS_PREFIX}${name}/data-${tag}${suffix}`;
}

/** The stream name of a manifest key, or undefined for any other key. */
export function streamNameOfManifestKey(key: string): string | undefined {
  const match = /^streams\/([^/]+)\/manifest\.json$/.exec(key);
  return match?.[1];
}
