/**
 * `metadata.nsls2` of an NSLS-II kernelspec, field for field as nsls2_artifacts/kernelmeta.py
 * (`KernelMetadata`) declares it: the agent writes it, the server extension and this lab
 * extension read it. Change both together; tests/test_kernelmeta.py checks the fields match.
 *
 * `channel` is required: a spec without it (or with another value) is not an NSLS-II spec,
 * so no reader guesses whether it is the rolling kernel.
 */

export type Channel = 'latest' | 'lts';

export interface INsls2Meta {
  env: string;
  build_id: string;
  channel: Channel;
  label: string; // "latest", or this spec's LTS label
  labels?: string[]; // every LTS label the display name shows
  env_display_name?: string; // "NSLS-II base", the name without label and details
  created?: string;
  python?: string | null;
  expires?: string | null; // LTS: ISO date its support ends
  promoted?: string | null;
  listed?: boolean; // in the launcher's short list
  beamlines?: string[];
  memory_limit?: number | null; // bytes; null = no ceiling
}

const isStrings = (value: unknown): value is string[] =>
  Array.isArray(value) && value.every(v => typeof v === 'string');

const optional = <T>(value: unknown, ok: (v: unknown) => v is T): T | undefined =>
  value === undefined ? undefined : ok(value) ? value : undefined;

const isString = (v: unknown): v is string => typeof v === 'string';
const isStringOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isSizeOrNull = (v: unknown): v is number | null =>
  v === null || (typeof v === 'number' && Number.isInteger(v) && v >= 0);

/** The nsls2 block of a kernelspec's metadata, or null (stock kernel, or not a valid record). */
export function parseNsls2Meta(metadata: unknown): INsls2Meta | null {
  if (!metadata || typeof metadata !== 'object') {
    return null;
  }
  const block = (metadata as Record<string, unknown>)['nsls2'];
  if (!block || typeof block !== 'object') {
    return null;
  }
  const m = block as Record<string, unknown>;
  if (
    !isString(m.env) ||
    !isString(m.build_id) ||
    (m.channel !== 'latest' && m.channel !== 'lts') ||
    !isString(m.label)
  ) {
    return null;
  }
  return {
    env: m.env,
    build_id: m.build_id,
    channel: m.channel,
    label: m.label,
    labels: optional(m.labels, isStrings),
    env_display_name: optional(m.env_display_name, isString),
    created: optional(m.created, isString),
    python: optional(m.python, isStringOrNull),
    expires: optional(m.expires, isStringOrNull),
    promoted: optional(m.promoted, isStringOrNull),
    listed: optional(m.listed, isBool),
    beamlines: optional(m.beamlines, isStrings),
    memory_limit: optional(m.memory_limit, isSizeOrNull)
  };
}
