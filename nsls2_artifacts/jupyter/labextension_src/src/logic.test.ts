/**
 * Unit tests of logic.ts with node's test runner (`npm test`, run by .ci/run through
 * tests/test_labextension.py): card lists, kernel choice for notebooks, beamline
 * notebooks, the build indicator, the server API reader.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  beamlineCards,
  beamlineFileName,
  beamlineNotebook,
  buildDate,
  buildIdTime,
  cardMatches,
  compactKernelName,
  chooseForMissing,
  envCards,
  indicator,
  ISpec,
  nsls2Of,
  pickerPreselect,
  pickerRows,
  PICKER_TOP_ROWS,
  recommendedKernel,
  mustAsk,
  parseBeamlineEnvs,
  parseBeamlines,
  parseServerInfo,
  tooltip
} from './logic.js';

function spec(
  env: string,
  label: string,
  buildId: string,
  extra: Record<string, unknown> = {}
): ISpec {
  const lts = label !== 'latest';
  const name = `nsls2-${env}-${label}`;
  return {
    name,
    displayName: `NSLS-II ${env} ${lts ? label : '(latest)'}`,
    language: 'python',
    logo: `/kernelspecs/${name}/logo-svg.svg`,
    nsls2: nsls2Of({
      nsls2: {
        env,
        build_id: buildId,
        channel: lts ? 'lts' : 'latest',
        label,
        created: buildId.slice(0, 10).replace(/\./g, '-') + 'T02:00:00Z',
        python: '3.11.7',
        expires: lts ? '2029-05-01' : null,
        listed: true,
        beamlines: [],
        ...extra
      }
    })
  };
}

const stock: ISpec = {
  name: 'python3',
  displayName: 'Python 3 (ipykernel)',
  language: 'python',
  nsls2: null
};

// base: latest + 3 LTS, the oldest unlisted; hxn: latest + 1 LTS
const specs: ISpec[] = [
  stock,
  spec('base', 'latest', '2026.11.30T0200Z-aaaaaaaa', { beamlines: ['csx', 'iss'] }),
  spec('base', '2026-1', '2026.02.01T0200Z-bbbbbbbb'),
  spec('base', '2025-2', '2025.08.01T0200Z-cccccccc'),
  spec('base', '2024-1', '2024.02.01T0200Z-dddddddd', { listed: false }),
  spec('hxn', 'latest', '2026.11.29T0200Z-eeeeeeee', { beamlines: ['hxn', 'csx'] }),
  spec('hxn', '2026-1', '2026.03.01T0200Z-ffffffff')
];

test('launcher: one card per env (its latest), listed LTS on the card, unlisted left out', () => {
  const cards = envCards(specs);
  assert.deepEqual(
    cards.map(c => [c.kernelName, c.label, c.date, c.lts.map(l => l.label)]),
    [
      ['nsls2-base-latest', 'NSLS-II base', '2026-11-30', ['2026-1', '2025-2']],
      ['nsls2-hxn-latest', 'NSLS-II hxn', '2026-11-29', ['2026-1']]
    ]
  );
  // the recommended env first, whatever its name
  assert.equal(envCards(specs, 'nsls2-hxn-latest')[0].env, 'hxn');
  assert.ok(cardMatches(cards[1], 'HXN'));
  assert.ok(cardMatches(cards[0], 'base 2025-2') && cardMatches(cards[0], 'iss'));
  assert.ok(!cardMatches(cards[0], 'hxn'));
});

/** 30 envs, each: latest + 6 LTS (the newest 2 listed); and the stock kernel. */
function site(): ISpec[] {
  const many: ISpec[] = [stock];
  for (let e = 0; e < 30; e++) {
    const env = e === 0 ? 'base' : `env${String(e).padStart(2, '0')}`;
    many.push(spec(env, 'latest', '2026.11.30T0200Z-00000000'));
    for (let y = 0; y < 6; y++) {
      many.push(spec(env, `202${y}-1`, `202${y}.02.01T0200Z-0000000${y}`, { listed: y >= 4 }));
    }
  }
  return many;
}

test('launcher: 30 envs x 7 kernels make 30 cards', () => {
  assert.equal(envCards(site()).length, 30);
});

test('kernel dialog: about ten rows by default, older builds and the rest on request', () => {
  const many = site();
  const none = { query: '', expanded: new Set<string>(), showAll: false };
  const rec = recommendedKernel(many, 'python3');
  assert.equal(rec, 'nsls2-base-latest'); // the server default is not NSLS-II: base
  const rows = pickerRows(many, null, rec, none);
  assert.ok(rows.length <= 10, `${rows.length} rows`);
  assert.equal(rows.length, PICKER_TOP_ROWS + 1);
  assert.deepEqual(rows[0].badges, ['recommended', 'latest']);
  assert.equal(rows[rows.length - 1].kind, 'more');
  assert.equal(pickerPreselect(rows, null, rec), 'nsls2-base-latest');
  // the notebook's own kernel comes first, even an unlisted LTS
  const old = pickerRows(many, 'nsls2-env07-2021-1', rec, none);
  assert.equal(old[0].name, 'nsls2-env07-2021-1');
  assert.ok(old[0].badges.includes('current') && old[0].badges.includes('unlisted'));
  assert.equal(pickerPreselect(old, 'nsls2-env07-2021-1', rec), 'nsls2-env07-2021-1');
  // an env opened: its listed LTS under it, newest first
  const open = pickerRows(many, null, rec, { ...none, expanded: new Set(['base']) });
  assert.equal(open[0].older, 2);
  assert.deepEqual(
    open.slice(1, 3).map(r => [r.name, r.depth]),
    [
      ['nsls2-base-2025-1', 1],
      ['nsls2-base-2024-1', 1]
    ]
  );
  // show all: every env once and the stock kernel, no LTS
  const all = pickerRows(many, null, rec, { ...none, showAll: true });
  assert.equal(all.length, 31);
  assert.ok(all.some(r => r.name === 'python3'));
  // search: unlisted builds too
  const found = pickerRows(many, null, rec, { ...none, query: 'env07 2021' });
  assert.deepEqual(
    found.map(r => r.name),
    ['nsls2-env07-2021-1']
  );
  assert.ok(pickerRows(many, null, rec, { ...none, query: 'lts' }).length <= 31);
  // the hub's default kernel wins when it is NSLS-II
  assert.equal(recommendedKernel(many, 'nsls2-env03-latest'), 'nsls2-env03-latest');
});

test('tooltip: build date, python, end of support for LTS', () => {
  const lts = tooltip(specs[2]);
  assert.match(lts, /built 2026-02-01 02:00 UTC/);
  assert.match(lts, /Python 3\.11\.7/);
  assert.match(lts, /supported until 2029-05-01/);
  assert.doesNotMatch(tooltip(specs[1]), /supported until/);
});

test('retired kernel: same env only, nearest kept LTS pre-selected, message from record', () => {
  const retired = [
    {
      name: 'nsls2-base-2023-1',
      env: 'base',
      label: '2023-1',
      build_id: '2023.02.01T0200Z-99999999',
      display_name: 'NSLS-II base 2023-1 (Python 3.11, until 2026-05)',
      retired: '2026-05-01'
    }
  ];
  const choice = chooseForMissing('nsls2-base-2023-1', null, specs, retired);
  assert.equal(choice.kind, 'same-env');
  if (choice.kind !== 'same-env') return;
  assert.equal(choice.title, 'Kernel retired');
  assert.equal(choice.message, 'NSLS-II base 2023-1, retired 2026-05-01');
  // the oldest kept LTS (unlisted, but deployed) is the nearest in time
  assert.equal(choice.preselected, 'nsls2-base-2024-1');
  assert.ok(choice.choices.every(s => s.nsls2!.env === 'base'));
  assert.ok(choice.choices.some(s => s.name === 'nsls2-base-latest'));
});

test('retired kernel without record: the notebook metadata names the env', () => {
  // a mangled or renamed kernel name: only metadata.nsls2 says which env it was
  const choice = chooseForMissing(
    'nsls2-old-name',
    { env: 'hxn', build_id: '2025.01.01T0200Z-12345678', track: '2025-1' },
    specs,
    []
  );
  assert.equal(choice.kind, 'same-env');
  if (choice.kind !== 'same-env') return;
  assert.equal(choice.title, 'Kernel not deployed'); // no record: never called retired
  assert.equal(choice.preselected, 'nsls2-hxn-2026-1');
  assert.ok(choice.choices.every(s => s.nsls2!.env === 'hxn'));
});

test('nearest LTS by the second: builds of the same minute', () => {
  const close = [
    spec('demo', '2026-1', '2026.12.01T075247Z-cccccccc'),
    spec('demo', '2025-2', '2026.12.01T075239Z-bbbbbbbb'),
    spec('demo', '2025-1', '2026.12.01T075231Z-aaaaaaaa', { listed: false })
  ];
  const choice = chooseForMissing(
    'nsls2-demo-2023-1',
    null,
    close,
    [{ name: 'nsls2-demo-2023-1', env: 'demo', label: '2023-1', build_id: '2026.12.01T075231Z-aaaaaaaa', display_name: 'x', retired: '2026-12-01' }]
  );
  assert.equal(choice.kind === 'same-env' && choice.preselected, 'nsls2-demo-2025-1');
});

test('missing kernel: its env latest; a kernel the site never had is not "retired"', () => {
  const only = [stock, spec('hxn', 'latest', '2026.11.29T0200Z-eeeeeeee')];
  const choice = chooseForMissing('nsls2-hxn-2024-1', null, only, []);
  assert.equal(choice.kind, 'same-env');
  if (choice.kind === 'same-env') assert.equal(choice.preselected, 'nsls2-hxn-latest');
  const foreign = chooseForMissing('julia-1.9', null, specs, []);
  assert.deepEqual(foreign, {
    kind: 'pick',
    message: 'This notebook names the kernel "julia-1.9", which this site does not have.'
  });
  // an env this site never had: the kernel dialog, saying so, not "retired"
  const never = chooseForMissing('nsls2-srx-latest', null, specs, []);
  assert.equal(never.kind, 'pick');
  assert.match(never.kind === 'pick' ? never.message : '', /NSLS-II kernel "nsls2-srx-latest"/);
  // a retired record of an env that is gone: retired, and nothing of it left to offer
  const record = { name: 'nsls2-srx-2023-1', env: 'srx', label: '2023-1', build_id: '', display_name: 'NSLS-II SRX 2023-1 (Python 3.11)', retired: '2026-01-01' };
  const gone = chooseForMissing('nsls2-srx-2023-1', null, specs, [record]);
  assert.equal(gone.kind, 'same-env');
  if (gone.kind === 'same-env') {
    assert.equal(gone.title, 'Kernel retired');
    assert.deepEqual(gone.choices, []);
    assert.equal(gone.preselected, null);
  }
});

test('beamlines: the env named after it, else the most specific env listing it', () => {
  const site = [
    spec('base', 'latest', '2026.11.30T0200Z-aaaaaaaa', { beamlines: ['csx', 'hxn', 'tst'] }),
    spec('csx', 'latest', '2026.11.30T0200Z-bbbbbbbb', { beamlines: [] }),
    spec('hxn', 'latest', '2026.11.30T0200Z-cccccccc', { beamlines: ['hxn', 'tst'] })
  ];
  assert.deepEqual(
    beamlineCards(site, ['csx', 'hxn', 'tst', 'nobody']).map(c => [c.beamline, c.spec.name]),
    [
      ['csx', 'nsls2-csx-latest'], // its own env, not "base" first by name
      ['hxn', 'nsls2-hxn-latest'],
      ['tst', 'nsls2-hxn-latest'] // hxn serves 2 beamlines, base 3
    ]
  );
  // the site config's beamlines.NAME.env: after an env named after it, before the listing
  const configured = parseBeamlineEnvs({ envs: { tst: 'base', csx: 'hxn', hxn: 'nowhere' } });
  assert.deepEqual(
    beamlineCards(site, ['csx', 'hxn', 'tst'], configured).map(c => [c.beamline, c.spec.name]),
    [
      ['csx', 'nsls2-csx-latest'],
      ['hxn', 'nsls2-hxn-latest'],
      ['tst', 'nsls2-base-latest']
    ]
  );
  assert.deepEqual(parseBeamlineEnvs({ beamlines: [] }), {});
});

test('beamlines: one card each, served by the first env naming it; notebook content', () => {
  const cards = beamlineCards(specs);
  assert.deepEqual(
    cards.map(c => [c.beamline, c.spec.name]),
    [
      ['csx', 'nsls2-base-latest'],
      ['hxn', 'nsls2-hxn-latest'],
      ['iss', 'nsls2-base-latest']
    ]
  );
  const nb = beamlineNotebook('csx', specs[1]) as any;
  assert.equal(nb.metadata.kernelspec.name, 'nsls2-base-latest');
  assert.deepEqual(nb.metadata.nsls2, { beamline: 'csx', env: 'base', track: 'latest' });
  assert.equal(nb.cells[0].source.split('\n')[1], 'c = from_profile("csx")');
  assert.equal(beamlineFileName('csx', ['csx.ipynb', 'csx-1.ipynb', 'x.ipynb']), 'csx-2.ipynb');
  assert.equal(beamlineFileName('hxn', ['csx.ipynb']), 'hxn.ipynb');
  // only beamlines with a profile in the site config get a card
  assert.deepEqual(
    beamlineCards(specs, parseBeamlines({ beamlines: ['hxn', 'iss', 'srx'] })).map(c => c.beamline),
    ['hxn', 'iss']
  );
  assert.equal(parseBeamlines('nope'), null);
});

test('indicator: concrete build date, marked when latest moved on', () => {
  const current = indicator('nsls2-base-latest', '2026.11.30T0200Z-aaaaaaaa', specs)!;
  assert.equal(current.text, 'base latest · 2026-11-30 02:00 UTC');
  assert.equal(current.newer, false);
  const behind = indicator('nsls2-base-latest', '2026.11.01T0200Z-00000000', specs)!;
  assert.equal(behind.newer, true);
  assert.match(behind.text, /2026-11-01 02:00 UTC ⬆ newer/);
  assert.equal(indicator('nsls2-base-2026-1', null, specs)!.newer, false);
  assert.equal(indicator('python3', null, specs), null);
});

test('server info: retired map or file, running builds, junk ignored', () => {
  const info = parseServerInfo({
    retired: {
      kernels: {
        'nsls2-base-2023-1': {
          env: 'base',
          label: '2023-1',
          build_id: 'x',
          display_name: 'NSLS-II base 2023-1',
          retired: '2026-05-01'
        },
        bad: 'nope'
      }
    },
    running: { k1: { env: 'base', build_id: 'b1' }, k2: 'b2', k3: 7 }
  });
  assert.deepEqual(
    info.retired.map(r => r.name),
    ['nsls2-base-2023-1']
  );
  assert.deepEqual([...info.running], [
    ['k1', 'b1'],
    ['k2', 'b2']
  ]);
  assert.deepEqual(parseServerInfo(null).retired, []);
  assert.equal(buildDate('2026.11.25T0200Z-abcdef12'), '2026-11-25 02:00 UTC');
});

test('a missing NSLS-II kernel is never replaced silently by the only kernel of its language', () => {
  const names = ['nsls2-hxn-latest'];
  assert.equal(mustAsk('nsls2-demo-2023-1', names, null), true);
  assert.equal(mustAsk('renamed', names, { env: 'demo' }), true);
  assert.equal(mustAsk('nsls2-hxn-latest', names, null), false);
  assert.equal(mustAsk('julia-1.9', names, null), false);
  assert.equal(mustAsk(undefined, names, null), false);
});

test('toolbar kernel name: env and track, short enough for a split view', () => {
  const base = spec('base', 'latest', '2026.11.30T0200Z-aaaaaaaa', { env_display_name: 'NSLS-II base' });
  assert.equal(compactKernelName(base, ''), 'base · latest');
  assert.equal(compactKernelName(specs[2], ''), 'base · 2026-1');
  assert.equal(compactKernelName(stock, ''), 'Python 3 (ipykernel)');
  assert.equal(compactKernelName(undefined, 'No Kernel'), 'No Kernel');
});

test('build id time: one parser, impossible times and other strings are none', () => {
  const iso = (id: string) => buildIdTime(id)?.toISOString();
  assert.equal(iso('2026.11.25T020304Z-1a2b3c4d'), '2026-11-25T02:03:04.000Z');
  assert.equal(iso('2026.11.25T0203Z-1a2b3c4d'), '2026-11-25T02:03:00.000Z');
  assert.equal(buildIdTime('2026.13.25T020000Z-1a2b3c4d'), null); // month 13
  assert.equal(buildIdTime('2026-11-25T02:00:00Z'), null);
  assert.equal(buildDate('2026.11.25T020304Z-1a2b3c4d'), '2026-11-25 02:03 UTC');
  assert.equal(buildDate('2026-11-25T02:00:00Z'), '2026-11-25 02:00 UTC');
});

test('kernel metadata: a field of the wrong type makes it no NSLS-II record, as in Python', () => {
  const block = {
    env: 'demo',
    build_id: '2026.11.25T020000Z-1a2b3c4d',
    channel: 'lts',
    label: '2026-1'
  };
  assert.equal(nsls2Of({ nsls2: block })?.label, '2026-1');
  assert.equal(nsls2Of({ nsls2: { ...block, added_by_a_newer_agent: 1 } })?.env, 'demo');
  for (const wrong of [
    { listed: 'yes' },
    { labels: 'x' },
    { memory_limit: -1 },
    { memory_limit: 1.5 },
    { python: 3 },
    { created: null },
    { beamlines: [1] }
  ]) {
    assert.equal(nsls2Of({ nsls2: { ...block, ...wrong } }), null, JSON.stringify(wrong));
  }
  assert.equal(nsls2Of({ nsls2: { ...block, python: null, memory_limit: null } })?.env, 'demo');
  assert.equal(nsls2Of({ nsls2: { env: 'demo', build_id: 'b', label: 'latest' } }), null);
});
