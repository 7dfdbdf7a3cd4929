/**
 * `metadata.nsls2` of an NSLS-II kernelspec, field for field as nsls2_artifacts/kernelmeta.py
 * (`KernelMetadata`) declares it: the agent writes it, the server extension and this lab
 * extension read it. Change both together; tests/test_kernelmeta.py checks the fields match.
 *
 * `channel` is required: a spec without it (or with another value) is not an NSLS-II spec,
 * so no reader guesses whether it is the rolling kernel. A field of the wrong type, required
 * or not, makes the record invalid on both sides (kernelmeta.py refuses it too).
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

// an optional field is absent or of its type; one of another type makes the whole record
// invalid, as kernelmeta.py (msgspec) refuses it, so both sides see a stock kernel
const absentOr = (value: unknown, ok: (v: unknown) => boolean): boolean =>
  value === undefined || ok(value);

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
    !isString(m.label) ||
    !absentOr(m.labels, isStrings) ||
    !absentOr(m.env_display_name, isString) ||
    !absentOr(m.created, isString) ||
    !absentOr(m.python, isStringOrNull) ||
    !absentOr(m.expires, isStringOrNull) ||
    !absentOr(m.promoted, isStringOrNull) ||
    !absentOr(m.listed, isBool) ||
    !absentOr(m.beamlines, isStrings) ||
    !absentOr(m.memory_limit, isSizeOrNull)
  ) {
    return null;
  }
  return {
    env: m.env,
    build_id: m.build_id,
    channel: m.channel,
    label: m.label,
    labels: m.labels as string[] | undefined,
    env_display_name: m.env_display_name as string | undefined,
    created: m.created as string | undefined,
    python: m.python as string | null | undefined,
    expires: m.expires as string | null | undefined,
    promoted: m.promoted as string | null | undefined,
    listed: m.listed as boolean | undefined,
    beamlines: m.beamlines as string[] | undefined,
    memory_limit: m.memory_limit as number | null | undefined
  };
}
