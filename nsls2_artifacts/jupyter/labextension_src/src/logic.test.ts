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
  chooseForMissing,
  consoleCards,
  indicator,
  ISpec,
  launcherCards,
  nsls2Of,
  mustAsk,
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

test('launcher: latest then listed LTS per env, unlisted and stock kernels left out', () => {
  assert.deepEqual(
    launcherCards(specs).map(c => c.kernelName),
    [
      'nsls2-base-latest',
      'nsls2-base-2026-1',
      'nsls2-base-2025-2',
      'nsls2-hxn-latest',
      'nsls2-hxn-2026-1'
    ]
  );
  assert.deepEqual(
    consoleCards(specs).map(c => c.kernelName),
    ['nsls2-base-latest', 'nsls2-hxn-latest']
  );
});

test('launcher: at most envs x (1 + listed) cards for 30 envs x 7 kernels', () => {
  const many: ISpec[] = [];
  for (let e = 0; e < 30; e++) {
    many.push(spec(`env${e}`, 'latest', '2026.11.30T0200Z-00000000'));
    for (let y = 0; y < 6; y++) {
      many.push(spec(`env${e}`, `202${y}-1`, `202${y}.02.01T0200Z-0000000${y}`, { listed: y >= 4 }));
    }
  }
  assert.equal(launcherCards(many).length, 30 * 3);
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
  assert.equal(choice.kind, 'retired');
  if (choice.kind !== 'retired') return;
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
  assert.equal(choice.kind, 'retired');
  if (choice.kind !== 'retired') return;
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
  assert.equal(choice.kind === 'retired' && choice.preselected, 'nsls2-demo-2025-1');
});

test('retired env with no LTS left: its latest; a foreign name: the stock dialog', () => {
  const only = [stock, spec('hxn', 'latest', '2026.11.29T0200Z-eeeeeeee')];
  const choice = chooseForMissing('nsls2-hxn-2024-1', null, only, []);
  assert.equal(choice.kind, 'retired');
  if (choice.kind === 'retired') assert.equal(choice.preselected, 'nsls2-hxn-latest');
  assert.deepEqual(chooseForMissing('julia-1.9', null, specs, []), { kind: 'stock' });
  // an env that is gone entirely: a message, no choice of another env's kernel
  const gone = chooseForMissing('nsls2-srx-latest', null, specs, []);
  assert.equal(gone.kind, 'retired');
  if (gone.kind === 'retired') {
    assert.deepEqual(gone.choices, []);
    assert.equal(gone.preselected, null);
  }
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
