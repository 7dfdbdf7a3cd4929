/**
 * Pure decisions of the NSLS-II JupyterLab extension, with no JupyterLab import so that
 * node's test runner can check them: which launcher cards to show, which kernel an
 * opened notebook gets, what a beamline card creates, what the build indicator says.
 *
 * Called by index.ts (the plugins) and by logic.test.ts.
 */

import { INsls2Meta, parseNsls2Meta } from './metadata';

export type { INsls2Meta };

/** What the extension needs of one kernelspec (from GET /api/kernelspecs). */
export interface ISpec {
  name: string;
  displayName: string;
  language: string;
  logo?: string;
  nsls2: INsls2Meta | null;
}

/** One entry of DEPLOY_ROOT/share/jupyter/nsls2/retired.json (`kernels` map). */
export interface IRetired {
  name: string;
  env: string;
  label: string;
  build_id: string;
  display_name: string;
  retired: string;
}

/** A notebook's own record of its build (`metadata.nsls2`, written on save). */
export interface INotebookBuild {
  env?: string;
  build_id?: string;
  track?: string;
}

const MANAGED_PREFIX = 'nsls2-';

/** The nsls2 block of a kernelspec's metadata (metadata.ts, the typed mirror of
 * kernelmeta.py), or null for a stock/foreign kernel. */
export function nsls2Of(metadata: unknown): INsls2Meta | null {
  return parseNsls2Meta(metadata);
}

/** True for a kernel name the agent would write, even when its spec is gone. */
export function looksManaged(name: string | undefined | null): boolean {
  return !!name && name.startsWith(MANAGED_PREFIX);
}

const BUILD_ID_TIME = /^(\d{4})\.(\d{2})\.(\d{2})T(\d{2})(\d{2})(\d{2})?Z?(?:-|$)/;

/**
 * When a build id (`2026.11.25T020000Z-abcd1234`) says its build was made, null if it is not
 * a build id or names no real time (month 13): the one parser of a build id's time here, as
 * `records.build_id_time` is in Python.
 */
export function buildIdTime(buildId: string): Date | null {
  const m = BUILD_ID_TIME.exec(buildId);
  if (!m) {
    return null;
  }
  const parts = [+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] ?? 0)] as const;
  const time = new Date(Date.UTC(...parts));
  const back = [
    time.getUTCFullYear(),
    time.getUTCMonth(),
    time.getUTCDate(),
    time.getUTCHours(),
    time.getUTCMinutes(),
    time.getUTCSeconds()
  ];
  return back.every((value, i) => value === parts[i]) ? time : null; // Date.UTC rolls over
}

/** `2026.11.25T020000Z-abcd1234` (or an ISO time) -> `2026-11-25 02:00 UTC`. */
export function buildDate(buildIdOrIso: string | undefined): string {
  if (!buildIdOrIso) {
    return '';
  }
  const made = buildIdTime(buildIdOrIso);
  if (made) {
    const iso = made.toISOString();
    return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
  }
  const iso = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}))?/.exec(buildIdOrIso);
  if (iso) {
    return iso[4] ? `${iso[1]}-${iso[2]}-${iso[3]} ${iso[4]}:${iso[5]} UTC` : iso[0];
  }
  return buildIdOrIso;
}

/** The sortable time part of a build id ("2026.11.25T0200Z"); build ids sort by time. */
function buildTime(buildId: string): string {
  return buildId.split('-')[0];
}

/** Card tooltip: build date, python, and for LTS kernels the end of support. */
export function tooltip(spec: ISpec): string {
  const meta = spec.nsls2;
  if (!meta) {
    return spec.displayName;
  }
  const parts = [spec.displayName, `built ${buildDate(meta.created || meta.build_id)}`];
  if (meta.python) {
    parts.push(`Python ${meta.python}`);
  }
  if (meta.channel === 'lts' && meta.expires) {
    parts.push(`supported until ${buildDate(meta.expires).replace(/ 00:00 UTC$/, '')}`);
  }
  if (meta.channel !== 'lts') {
    parts.push('follows the newest build (restart the kernel to update)');
  }
  return parts.join('\n');
}

/** NSLS-II specs grouped by env: env -> {latest, lts (newest label first)}. */
export function byEnv(specs: ISpec[]): Map<string, { latest?: ISpec; lts: ISpec[] }> {
  const envs = new Map<string, { latest?: ISpec; lts: ISpec[] }>();
  for (const spec of specs) {
    if (!spec.nsls2) {
      continue;
    }
    const group = envs.get(spec.nsls2.env) ?? { lts: [] };
    if (spec.nsls2.channel === 'lts') {
      group.lts.push(spec);
    } else {
      group.latest = spec;
    }
    envs.set(spec.nsls2.env, group);
  }
  for (const group of envs.values()) {
    group.lts.sort((a, b) =>
      buildTime(b.nsls2!.build_id).localeCompare(buildTime(a.nsls2!.build_id)) ||
      b.nsls2!.label.localeCompare(a.nsls2!.label)
    );
  }
  return new Map([...envs.entries()].sort(([a], [b]) => a.localeCompare(b)));
}

/** One launcher card per env: its latest kernel, its listed LTS kernels one click away. */
export interface IEnvCard {
  env: string;
  kernelName: string; // what the card itself starts: latest (or the newest LTS if none)
  label: string; // "NSLS-II base": no date or details, so it never wraps mid-date
  channel: string; // of kernelName: "latest" or "lts"
  date: string; // of kernelName's build, "2026-12-01"
  lts: { kernelName: string; label: string; tooltip: string }[]; // listed, newest first
  beamlines: string[];
  tooltip: string;
  logo?: string;
  rank: number;
}

/** The env's name without label and details ("NSLS-II base"). */
export function envLabel(spec: ISpec): string {
  return spec.nsls2?.env_display_name || spec.displayName.replace(/\s*\([^)]*\)\s*$/, '');
}

/**
 * The NSLS-II launcher section: one card per env (the recommended env first, then by
 * name), starting its latest kernel; its listed LTS kernels ride on the card.
 * Kept-but-unlisted kernels get nothing here (the kernel dialog's search finds them).
 */
export function envCards(specs: ISpec[], recommended: string | null = null): IEnvCard[] {
  const first = specs.find(s => s.name === recommended)?.nsls2?.env;
  const cards: IEnvCard[] = [];
  const groups = [...byEnv(specs)].sort(
    ([a], [b]) => Number(b === first) - Number(a === first) || a.localeCompare(b)
  );
  for (const [env, group] of groups) {
    const lts = group.lts.filter(s => s.nsls2!.listed !== false);
    const main = group.latest ?? lts[0] ?? group.lts[0];
    if (!main) {
      continue;
    }
    cards.push({
      env,
      kernelName: main.name,
      label: envLabel(main),
      channel: main.nsls2!.channel,
      date: buildDate(main.nsls2!.created || main.nsls2!.build_id).slice(0, 10),
      lts: lts
        .filter(s => s !== main)
        .map(s => ({ kernelName: s.name, label: s.nsls2!.label, tooltip: tooltip(s) })),
      beamlines: main.nsls2!.beamlines ?? [],
      tooltip: tooltip(main),
      logo: main.logo,
      rank: cards.length
    });
  }
  return cards;
}

/**
 * The notebook toolbar's kernel name: short enough to stay in a split view
 * ("base · latest", "HAXPES · 2025-1"); any other kernel keeps its display name.
 */
export function compactKernelName(spec: ISpec | undefined, fallback: string): string {
  if (!spec?.nsls2) {
    return spec?.displayName ?? fallback;
  }
  const meta = spec.nsls2;
  const env = (meta.env_display_name || meta.env).replace(/^NSLS-II\s+/, '') || meta.env;
  return `${env} · ${meta.channel === 'lts' ? meta.label : 'latest'}`;
}

/** Whether an env card matches the launcher filter (every word: env, name, label, beamline). */
export function cardMatches(card: IEnvCard, query: string): boolean {
  const hay = [card.env, card.label, ...card.beamlines, ...card.lts.map(l => l.label)]
    .join(' ')
    .toLowerCase();
  return words(query).every(word => hay.includes(word));
}

function words(query: string): string[] {
  return query.toLowerCase().split(/\s+/).filter(Boolean);
}

/**
 * The kernel a new notebook should start on this site: the server's default kernel when it
 * is an NSLS-II one (the hub sets nsls2-base-latest), else the `base` env's latest, else
 * the server's default. null when none of these exists.
 */
export function recommendedKernel(specs: ISpec[], serverDefault: string | null): string | null {
  const named = specs.find(s => s.name === serverDefault);
  if (named?.nsls2) {
    return named.name;
  }
  const base = byEnv(specs).get('base')?.latest;
  return base?.name ?? named?.name ?? null;
}

/** One row of the kernel dialog. */
export interface IPickerRow {
  kind: 'kernel' | 'more';
  name: string; // the kernel name ('' for "more")
  env: string | null;
  title: string; // "NSLS-II base" / "Python 3 (ipykernel)" / "Show all 30 environments…"
  detail: string; // "built 2026-12-01 · Python 3.12" (LTS: "· until 2029-08")
  badges: string[]; // "recommended", "current", "latest", "LTS", "unlisted"
  depth: number; // 1: an older (LTS) build under its env's row
  older: number; // rows under the toggle of an env's row (its listed LTS), 0: no toggle
  expanded: boolean;
}

/** What the user asked the kernel dialog for: a search, envs opened, everything shown. */
export interface IPickerState {
  query: string;
  expanded: ReadonlySet<string>;
  showAll: boolean;
}

export const PICKER_TOP_ROWS = 8; // rows before "Show all…": the goal is ~10 entries
export const PICKER_SEARCH_ROWS = 30;

function row(spec: ISpec, badges: string[], depth = 0, older = 0, expanded = false): IPickerRow {
  const meta = spec.nsls2;
  const base = { kind: 'kernel' as const, name: spec.name, depth, older, expanded };
  if (!meta) {
    return { ...base, env: null, title: spec.displayName, detail: spec.name, badges };
  }
  const lts = meta.channel === 'lts';
  // the badges say latest / LTS: the detail line is when, which python, until when
  const parts = [`built ${buildDate(meta.created || meta.build_id).slice(0, 10)}`];
  if (meta.python) {
    parts.push(`Python ${meta.python.split('.').slice(0, 2).join('.')}`);
  }
  if (lts && meta.expires) {
    parts.push(`until ${meta.expires.slice(0, 7)}`);
  }
  const marks = [...badges, lts ? 'LTS' : 'latest'];
  if (meta.listed === false) {
    marks.push('unlisted');
  }
  return {
    ...base,
    env: meta.env,
    title: depth ? `${envLabel(spec)} ${meta.label}` : envLabel(spec),
    detail: parts.join(' · '),
    badges: marks
  };
}

function moreRow(title: string, detail: string): IPickerRow {
  return { kind: 'more', name: '', env: null, title, detail, badges: [], depth: 0, older: 0, expanded: false };
}

/**
 * The rows of the kernel dialog. Without a search: the notebook's current kernel (always,
 * listed or not), the recommended kernel, then one row per env (its latest) up to
 * PICKER_TOP_ROWS and a "Show all" row; an env's listed LTS kernels appear under it when
 * the user opens it. With a search: every kernel matching all words, unlisted and
 * non-NSLS-II ones included, up to PICKER_SEARCH_ROWS.
 */
export function pickerRows(
  specs: ISpec[],
  current: string | null,
  recommended: string | null,
  state: IPickerState
): IPickerRow[] {
  const groups = byEnv(specs);
  const badgesOf = (name: string) =>
    [name === recommended ? 'recommended' : '', name === current ? 'current' : ''].filter(
      Boolean
    );
  if (words(state.query).length) {
    return searchRows(specs, groups, state.query, badgesOf);
  }
  const rows: IPickerRow[] = [];
  const shown = new Set<string>();
  const envRow = (spec: ISpec) => {
    const env = spec.nsls2?.env;
    const group = env ? groups.get(env) : undefined;
    const older =
      group && spec === group.latest ? group.lts.filter(s => s.nsls2!.listed !== false) : [];
    const open = !!env && state.expanded.has(env) && older.length > 0;
    rows.push(row(spec, badgesOf(spec.name), 0, older.length, open));
    shown.add(spec.name);
    if (open) {
      for (const lts of older) {
        rows.push(row(lts, badgesOf(lts.name), 1));
        shown.add(lts.name);
      }
    }
  };
  const byName = new Map(specs.map(s => [s.name, s]));
  for (const name of [current, recommended]) {
    const spec = name ? byName.get(name) : undefined;
    if (spec && !shown.has(spec.name)) {
      envRow(spec);
    }
  }
  const rest: ISpec[] = [];
  for (const group of groups.values()) {
    const spec = group.latest ?? group.lts.find(s => s.nsls2!.listed !== false);
    if (spec && !shown.has(spec.name)) {
      rest.push(spec);
    }
  }
  const foreign = specs
    .filter(s => !s.nsls2 && !shown.has(s.name))
    .sort((a, b) => a.displayName.localeCompare(b.displayName));
  const room = Math.max(0, PICKER_TOP_ROWS - rows.filter(r => r.depth === 0).length);
  const visible = state.showAll ? rest : rest.slice(0, room);
  visible.forEach(envRow);
  if (state.showAll) {
    foreign.forEach(envRow);
  }
  const hidden = rest.length - visible.length + (state.showAll ? 0 : foreign.length);
  if (hidden > 0) {
    const others = foreign.length ? ' and other kernels' : '';
    rows.push(
      moreRow(
        `Show all ${groups.size} environments${others}…`,
        `${hidden} more; or type to search every kernel, older builds included`
      )
    );
  }
  return rows;
}

function searchRows(
  specs: ISpec[],
  groups: Map<string, { latest?: ISpec; lts: ISpec[] }>,
  query: string,
  badgesOf: (name: string) => string[]
): IPickerRow[] {
  const wanted = words(query);
  const hay = (s: ISpec) =>
    [
      s.name,
      s.displayName,
      s.nsls2?.env,
      s.nsls2?.env_display_name,
      s.nsls2?.label,
      s.nsls2 ? (s.nsls2.channel === 'lts' ? 'lts' : 'latest') : '',
      s.nsls2?.listed === false ? 'unlisted older' : '',
      ...(s.nsls2?.beamlines ?? [])
    ]
      .join(' ')
      .toLowerCase();
  const ordered: ISpec[] = [];
  for (const group of groups.values()) {
    ordered.push(...(group.latest ? [group.latest] : []), ...group.lts);
  }
  ordered.push(...specs.filter(s => !s.nsls2));
  const matches = ordered.filter(s => wanted.every(w => hay(s).includes(w)));
  const rows = matches.slice(0, PICKER_SEARCH_ROWS).map(s => ({
    ...row(s, badgesOf(s.name)),
    title: s.nsls2 ? `${envLabel(s)}${s.nsls2.channel === 'lts' ? ` ${s.nsls2.label}` : ''}` : s.displayName
  }));
  if (matches.length > PICKER_SEARCH_ROWS) {
    const more = matches.length - PICKER_SEARCH_ROWS;
    rows.push(moreRow(`${more} more match: add a word to narrow the search`, ''));
  }
  return rows;
}

/** The row the dialog selects first: the notebook's kernel, else the recommended one. */
export function pickerPreselect(
  rows: IPickerRow[],
  current: string | null,
  recommended: string | null
): string | null {
  const kernels = rows.filter(r => r.kind === 'kernel').map(r => r.name);
  for (const name of [current, recommended]) {
    if (name && kernels.includes(name)) {
      return name;
    }
  }
  return kernels[0] ?? null;
}

/** What to do with a notebook's kernel when JupyterLab found no spec of that name. */
export type KernelChoice =
  | { kind: 'pick'; message: string } // the kernel dialog, saying what the notebook named
  | {
      kind: 'same-env';
      title: string; // "Kernel retired" only when the site recorded retiring it
      message: string; // "NSLS-II base 2023-1, retired 2026-05-01"
      choices: ISpec[]; // the same env's deployed kernels, LTS then latest
      preselected: string | null;
    };

/**
 * Choose for a notebook naming `name` (absent from the kernelspecs): if it belongs to an
 * env deployed here (a retired record, its `nsls2-` name, or the notebook's own
 * metadata.nsls2 says which), offer only that env's kernels, with the kept LTS kernel
 * nearest in time pre-selected, else the env's latest. A kernel the site never had (no
 * record, no env of it) is not called retired: the kernel dialog says it is not here.
 */
export function chooseForMissing(
  name: string,
  notebook: INotebookBuild | null,
  specs: ISpec[],
  retired: IRetired[]
): KernelChoice {
  const record = retired.find(r => r.name === name) ?? null;
  const env = record?.env ?? notebook?.env ?? envFromName(name, specs);
  const group = env ? byEnv(specs).get(env) : undefined;
  if (!record && !group) {
    const what = looksManaged(name) || notebook?.env ? 'the NSLS-II kernel' : 'the kernel';
    return {
      kind: 'pick',
      message: `This notebook names ${what} "${name}", which this site does not have.`
    };
  }
  const choices = group ? [...group.lts, ...(group.latest ? [group.latest] : [])] : [];
  const buildId = record?.build_id ?? notebook?.build_id ?? '';
  const what = record
    ? `${retiredName(record, group)}, retired ${buildDate(record.retired).replace(/ 00:00 UTC$/, '')}`
    : `${name}${buildId ? ` (build ${buildDate(buildId)})` : ''}, which is not deployed here`;
  return {
    kind: 'same-env',
    title: record ? 'Kernel retired' : 'Kernel not deployed',
    message: what,
    choices,
    preselected: group ? nearestKept(group, buildId) : null
  };
}

/** "NSLS-II base 2023-1": the env's name and the label, without the spec's details. */
function retiredName(record: IRetired, group: { latest?: ISpec; lts: ISpec[] } | undefined) {
  const base = [group?.latest, ...(group?.lts ?? [])].find(s => s?.nsls2?.env_display_name)
    ?.nsls2?.env_display_name;
  if (base && record.label) {
    return `${base} ${record.label}`;
  }
  return record.display_name.replace(/\s*\([^)]*\)\s*$/, '');
}

/** The env an `nsls2-ENV-LABEL` name belongs to: the longest deployed env it starts with. */
function envFromName(name: string, specs: ISpec[]): string | undefined {
  if (!looksManaged(name)) {
    return undefined;
  }
  const envs = [...new Set(specs.map(s => s.nsls2?.env).filter((e): e is string => !!e))];
  return envs
    .filter(env => name.startsWith(`${MANAGED_PREFIX}${env.toLowerCase()}-`))
    .sort((a, b) => b.length - a.length)[0];
}

/** The kept LTS kernel whose build is closest in time to `buildId` (ties: the newer). */
function nearestKept(group: { latest?: ISpec; lts: ISpec[] }, buildId: string): string | null {
  if (group.lts.length === 0 || !buildId) {
    return (group.lts.length ? group.lts[group.lts.length - 1] : group.latest)?.name ?? null;
  }
  const target = timeValue(buildId);
  let best: ISpec | null = null;
  let bestDistance = Infinity;
  for (const spec of group.lts) {
    // lts is newest first, so on equal distance the newer one is kept
    const distance = Math.abs(timeValue(spec.nsls2!.build_id) - target);
    if (distance < bestDistance) {
      best = spec;
      bestDistance = distance;
    }
  }
  return best?.name ?? group.latest?.name ?? null;
}

function timeValue(buildId: string): number {
  return buildIdTime(buildId)?.getTime() ?? 0;
}

/**
 * Beamline -> the latest kernel it starts: the env named after the beamline, else the env
 * the site config names for it (`configured`: `beamlines.NAME.env`), else the most
 * specific env whose nsls2.yaml lists it (fewest beamlines: `base` serves all of them, so a
 * beamline's own env wins), then by name. `profiles`: the site's beamline profiles
 * (GET /nsls2/api/beamlines); a beamline without one could not connect, so it gets no
 * card. null: unknown, every served beamline counts.
 */
export function beamlineCards(
  specs: ISpec[],
  profiles: string[] | null = null,
  configured: Record<string, string> = {}
): { beamline: string; spec: ISpec }[] {
  const latest = [...byEnv(specs).values()]
    .map(group => group.latest)
    .filter((s): s is ISpec => !!s);
  const served = new Set(latest.flatMap(s => s.nsls2!.beamlines ?? []));
  const named = new Map(latest.map(s => [s.nsls2!.env.toLowerCase(), s]));
  const candidates = profiles ?? [...served];
  const cards: { beamline: string; spec: ISpec }[] = [];
  for (const beamline of [...new Set(candidates)].sort((a, b) => a.localeCompare(b))) {
    const own = named.get(beamline.toLowerCase());
    const listing = latest
      .filter(s => s.nsls2!.beamlines?.includes(beamline))
      .sort(
        (a, b) =>
          (a.nsls2!.beamlines?.length ?? 0) - (b.nsls2!.beamlines?.length ?? 0) ||
          a.nsls2!.env.localeCompare(b.nsls2!.env)
      );
    const setting = configured[beamline];
    const chosen = setting ? latest.find(s => s.nsls2!.env === setting) : undefined;
    const spec = own ?? chosen ?? listing[0];
    if (spec) {
      cards.push({ beamline, spec });
    }
  }
  return cards;
}

/** First free `BEAMLINE.ipynb`, `BEAMLINE-1.ipynb`, ... among `existing` file names. */
export function beamlineFileName(beamline: string, existing: Iterable<string>): string {
  const taken = new Set(existing);
  for (let i = 0; ; i++) {
    const name = i === 0 ? `${beamline}.ipynb` : `${beamline}-${i}.ipynb`;
    if (!taken.has(name)) {
      return name;
    }
  }
}

/** The first cell of a beamline notebook: that beamline's tiled catalog. */
export function beamlineCell(beamline: string): string {
  return `from tiled.client import from_profile\nc = from_profile(${JSON.stringify(beamline)})\nc`;
}

/** A new nbformat 4 notebook on `spec` whose first cell connects to `beamline`. */
export function beamlineNotebook(beamline: string, spec: ISpec): Record<string, unknown> {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {
      kernelspec: { name: spec.name, display_name: spec.displayName, language: spec.language },
      language_info: { name: spec.language },
      // build_id is recorded by the server extension when the notebook is saved
      nsls2: { beamline, env: spec.nsls2?.env, track: spec.nsls2?.label ?? 'latest' }
    },
    cells: [
      {
        cell_type: 'code',
        id: `${beamline}-catalog`.replace(/[^A-Za-z0-9_-]/g, '_'),
        metadata: {},
        execution_count: null,
        outputs: [],
        source: beamlineCell(beamline)
      }
    ]
  };
}

export interface IIndicator {
  text: string;
  title: string;
  newer: boolean;
}

/**
 * The status bar text for a running kernel: its concrete build date, marked when the
 * env's latest kernel now points at a newer build than the one running.
 */
export function indicator(
  kernelName: string,
  runningBuildId: string | null,
  specs: ISpec[]
): IIndicator | null {
  const spec = specs.find(s => s.name === kernelName);
  if (!spec?.nsls2) {
    return null;
  }
  const running = runningBuildId || spec.nsls2.build_id;
  const newest = byEnv(specs).get(spec.nsls2.env)?.latest?.nsls2?.build_id;
  // LTS users chose a fixed build: only the rolling kernel is marked as behind
  const newer =
    spec.nsls2.channel !== 'lts' && !!newest && buildTime(newest) > buildTime(running);
  const track = spec.nsls2.channel === 'lts' ? spec.nsls2.label : 'latest';
  let title = `${spec.displayName}: build ${running}`;
  if (newer) {
    title += `\nA newer build is deployed (${buildDate(newest)}): restart the kernel to use it`;
  }
  return {
    text: `${spec.nsls2.env} ${track} · ${buildDate(running)}${newer ? ' ⬆ newer' : ''}`,
    title,
    newer
  };
}

/** What the server extension says beyond the kernelspecs. */
export interface IServerInfo {
  retired: IRetired[];
  running: Map<string, string>; // kernel id -> concrete build id
}

/**
 * Read `GET /nsls2/api/kernels`: `retired` as retired.json's `kernels` map (or the whole
 * file, or a list), `running` as kernel id -> {build_id} (or the build id). Anything
 * unreadable counts as absent, so the extension still works without the server side.
 */
export function parseServerInfo(data: unknown): IServerInfo {
  const info: IServerInfo = { retired: [], running: new Map() };
  if (!data || typeof data !== 'object') {
    return info;
  }
  const body = data as Record<string, unknown>;
  let retired = body.retired;
  if (retired && typeof retired === 'object' && !Array.isArray(retired)) {
    const inner = (retired as Record<string, unknown>).kernels;
    retired = inner && typeof inner === 'object' ? inner : retired;
  }
  const entries: [string | undefined, unknown][] = Array.isArray(retired)
    ? retired.map(r => [undefined, r])
    : Object.entries((retired as Record<string, unknown>) ?? {});
  for (const [key, value] of entries) {
    if (!value || typeof value !== 'object') {
      continue;
    }
    const r = value as Record<string, unknown>;
    const name = typeof r.name === 'string' ? r.name : key;
    if (!name || typeof r.env !== 'string') {
      continue;
    }
    info.retired.push({
      name,
      env: r.env,
      label: String(r.label ?? ''),
      build_id: String(r.build_id ?? ''),
      display_name: String(r.display_name ?? name),
      retired: String(r.retired ?? '')
    });
  }
  const running = body.running;
  if (running && typeof running === 'object') {
    for (const [id, value] of Object.entries(running as Record<string, unknown>)) {
      const build =
        typeof value === 'string'
          ? value
          : ((value as Record<string, unknown> | null)?.build_id as string | undefined);
      if (typeof build === 'string' && build) {
        info.running.set(id, build);
      }
    }
  }
  return info;
}

/** `GET /nsls2/api/beamlines` -> the profile names, or null when it did not answer. */
/** `envs` of GET /nsls2/api/beamlines: beamline -> the env the site config names for it. */
export function parseBeamlineEnvs(data: unknown): Record<string, string> {
  const envs = (data as { envs?: unknown } | null)?.envs;
  const out: Record<string, string> = {};
  if (envs && typeof envs === 'object' && !Array.isArray(envs)) {
    for (const [beamline, env] of Object.entries(envs)) {
      if (typeof env === 'string') {
        out[beamline] = env;
      }
    }
  }
  return out;
}

export function parseBeamlines(data: unknown): string[] | null {
  const list = (data as { beamlines?: unknown } | null)?.beamlines;
  return Array.isArray(list) ? list.filter((b): b is string => typeof b === 'string') : null;
}

/**
 * Whether a notebook's kernel preference must lose its language before JupyterLab picks a
 * kernel: it names an NSLS-II kernel that is not deployed. Otherwise JupyterLab silently
 * starts the one kernel of the same language when there is exactly one, which may be
 * another env's; without a language it asks, and the retired-kernel dialog answers.
 */
export function mustAsk(
  name: string | undefined,
  specNames: string[],
  notebook: INotebookBuild | null
): boolean {
  return !!name && !specNames.includes(name) && (looksManaged(name) || !!notebook?.env);
}
