/**
 * Pure decisions of the NSLS-II JupyterLab extension, with no JupyterLab import so that
 * node's test runner can check them: which launcher cards to show, which kernel an
 * opened notebook gets, what a beamline card creates, what the build indicator says.
 *
 * Called by index.ts (the plugins) and by logic.test.ts.
 */

/** `metadata.nsls2` of a kernelspec written by the nsls2-artifacts agent. */
export interface INsls2Meta {
  env: string;
  build_id: string;
  channel: string; // "latest" or "lts"
  label: string; // "latest" or the LTS label
  created?: string;
  python?: string;
  expires?: string | null;
  listed?: boolean;
  beamlines?: string[];
  env_display_name?: string; // "NSLS-II base", the name without label and details
}

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

export interface ICard {
  kernelName: string;
  env: string;
  label: string; // card label
  tooltip: string;
  logo?: string;
  rank: number;
}

const MANAGED_PREFIX = 'nsls2-';

/** The nsls2 block of a kernelspec's metadata, or null for a stock/foreign kernel. */
export function nsls2Of(metadata: unknown): INsls2Meta | null {
  if (!metadata || typeof metadata !== 'object') {
    return null;
  }
  const block = (metadata as Record<string, unknown>)['nsls2'];
  if (!block || typeof block !== 'object') {
    return null;
  }
  const meta = block as Record<string, unknown>;
  if (typeof meta.env !== 'string' || typeof meta.build_id !== 'string') {
    return null;
  }
  return {
    env: meta.env,
    build_id: meta.build_id,
    channel: typeof meta.channel === 'string' ? meta.channel : 'latest',
    label: typeof meta.label === 'string' ? meta.label : 'latest',
    created: typeof meta.created === 'string' ? meta.created : undefined,
    python: typeof meta.python === 'string' ? meta.python : undefined,
    expires: typeof meta.expires === 'string' ? meta.expires : null,
    // a spec that does not say is shown, as stock Jupyter would
    listed: meta.listed !== false,
    beamlines: Array.isArray(meta.beamlines)
      ? meta.beamlines.filter((b): b is string => typeof b === 'string')
      : [],
    env_display_name:
      typeof meta.env_display_name === 'string' ? meta.env_display_name : undefined
  };
}

/** True for a kernel name the agent would write, even when its spec is gone. */
export function looksManaged(name: string | undefined | null): boolean {
  return !!name && name.startsWith(MANAGED_PREFIX);
}

/** `2026.11.25T0200Z-abcd1234` (or an ISO time) -> `2026-11-25 02:00 UTC`. */
export function buildDate(buildIdOrIso: string | undefined): string {
  if (!buildIdOrIso) {
    return '';
  }
  const id = /^(\d{4})\.(\d{2})\.(\d{2})T(\d{2})(\d{2})/.exec(buildIdOrIso);
  if (id) {
    return `${id[1]}-${id[2]}-${id[3]} ${id[4]}:${id[5]} UTC`;
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

/**
 * The NSLS-II launcher section: per env (by name), its latest kernel and each listed LTS
 * kernel (newest first). Kept-but-unlisted kernels get no card.
 */
export function launcherCards(specs: ISpec[]): ICard[] {
  const cards: ICard[] = [];
  for (const [env, group] of byEnv(specs)) {
    const shown = [group.latest, ...group.lts].filter(
      (s): s is ISpec => !!s && s.nsls2!.listed !== false
    );
    for (const spec of shown) {
      cards.push({
        kernelName: spec.name,
        env,
        label: spec.displayName,
        tooltip: tooltip(spec),
        logo: spec.logo,
        rank: cards.length
      });
    }
  }
  return cards;
}

/** One console card per env: its latest kernel (or its newest LTS when it has none). */
export function consoleCards(specs: ISpec[]): ICard[] {
  const cards: ICard[] = [];
  for (const [env, group] of byEnv(specs)) {
    const spec = group.latest ?? group.lts[0];
    if (!spec) {
      continue;
    }
    cards.push({
      kernelName: spec.name,
      env,
      label: spec.displayName,
      tooltip: `A console on ${spec.displayName}\n${tooltip(spec)}`,
      logo: spec.logo,
      rank: cards.length
    });
  }
  return cards;
}

/** What to do with a notebook's kernel when JupyterLab found no spec of that name. */
export type KernelChoice =
  | { kind: 'stock' } // not ours: JupyterLab's own "Select Kernel" dialog
  | {
      kind: 'retired';
      message: string; // "NSLS-II base 2023-1, retired 2026-05-01"
      choices: ISpec[]; // the same env's deployed kernels, LTS then latest
      preselected: string | null;
    };

/**
 * Choose for a notebook naming `name` (absent from the kernelspecs): if it was an
 * NSLS-II kernel (a retired record, its `nsls2-` name, or the notebook's own
 * metadata.nsls2 says so), offer only the same env's kernels, with the kept LTS kernel
 * nearest in time to the retired build pre-selected, else the env's latest.
 */
export function chooseForMissing(
  name: string,
  notebook: INotebookBuild | null,
  specs: ISpec[],
  retired: IRetired[]
): KernelChoice {
  const record = retired.find(r => r.name === name) ?? null;
  const env = record?.env ?? notebook?.env ?? envFromName(name, specs);
  if (!record && !notebook?.env && !looksManaged(name)) {
    return { kind: 'stock' };
  }
  const group = env ? byEnv(specs).get(env) : undefined;
  const choices = group ? [...group.lts, ...(group.latest ? [group.latest] : [])] : [];
  const buildId = record?.build_id ?? notebook?.build_id ?? '';
  const what = record
    ? `${retiredName(record, group)}, retired ${buildDate(record.retired).replace(/ 00:00 UTC$/, '')}`
    : `${name}${buildId ? ` (build ${buildDate(buildId)})` : ''}, no longer deployed`;
  return {
    kind: 'retired',
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
  const m = /^(\d{4})\.(\d{2})\.(\d{2})T(\d{2})(\d{2})(\d{2})?/.exec(buildId);
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] ?? 0)) : 0;
}

/**
 * Beamline -> the latest kernel of the env serving it (first env by name if several).
 * `profiles`: the site's beamline profiles (GET /nsls2/api/beamlines); a beamline without
 * one could not connect, so it gets no card. null: unknown, every served beamline counts.
 */
export function beamlineCards(
  specs: ISpec[],
  profiles: string[] | null = null
): { beamline: string; spec: ISpec }[] {
  const found = new Map<string, ISpec>();
  for (const [, group] of byEnv(specs)) {
    const spec = group.latest;
    for (const beamline of spec?.nsls2?.beamlines ?? []) {
      if (spec && !found.has(beamline) && (!profiles || profiles.includes(beamline))) {
        found.set(beamline, spec);
      }
    }
  }
  return [...found.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([beamline, spec]) => ({ beamline, spec }));
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
