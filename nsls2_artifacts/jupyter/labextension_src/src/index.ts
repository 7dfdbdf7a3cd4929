/**
 * The NSLS-II JupyterLab plugins: a short "NSLS-II" launcher section (one card per env,
 * its LTS kernels on the card, beamline cards) in place of one card per kernelspec, a
 * kernel dialog that lists envs rather than every kernelspec (and handles notebooks naming
 * a retired kernel), restart notices as notifications, and a status bar item saying which
 * build the running kernel is on.
 *
 * Loaded by JupyterLab from share/jupyter/labextensions/nsls2-artifacts-lab; the
 * decisions live in logic.ts, this file only wires them to JupyterLab.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import {
  Dialog,
  ISessionContext,
  ISessionContextDialogs,
  SessionContextDialogs,
  showDialog
} from '@jupyterlab/apputils';
import { PathExt, URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker } from '@jupyterlab/notebook';
import { KernelSpec, ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { consoleIcon } from '@jupyterlab/ui-components';
import { DisposableDelegate, DisposableSet, IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import {
  BEAMLINE_CARD_CLASS,
  decorateLaunchers,
  ENV_CARD_CLASS,
  FILTER_FROM,
  IDecorations,
  keyClass
} from './cards';
import {
  beamlineCards,
  beamlineFileName,
  beamlineNotebook,
  chooseForMissing,
  compactKernelName,
  envCards,
  envLabel,
  indicator,
  INotebookBuild,
  ISpec,
  mustAsk,
  nsls2Of,
  parseBeamlineEnvs,
  parseBeamlines,
  parseServerInfo,
  IServerInfo,
  recommendedKernel,
  tooltip
} from './logic';
import { memoryNoticePlugin } from './memory';
import { watchNotices } from './notices';
import { pickKernel } from './picker';

const PLUGIN = 'nsls2-artifacts-lab';
const CATEGORY = 'NSLS-II';
const BEAMLINE_CATEGORY = 'NSLS-II beamlines';

namespace CommandIDs {
  export const newNotebook = 'nsls2:new-notebook';
  export const newConsole = 'nsls2:new-console';
  export const beamlineNotebook = 'nsls2:new-beamline-notebook';
}

/** The kernelspecs JupyterLab knows, in the shape logic.ts takes. */
function currentSpecs(app: JupyterFrontEnd): ISpec[] {
  const all = app.serviceManager.kernelspecs.specs;
  if (!all) {
    return [];
  }
  return Object.values(all.kernelspecs)
    .filter((s): s is KernelSpec.ISpecModel => !!s)
    .map(s => ({
      name: s.name,
      displayName: s.display_name,
      language: s.language,
      logo: s.resources['logo-svg'] || s.resources['logo-64x64'] || undefined,
      nsls2: nsls2Of(s.metadata)
    }));
}

/** The kernel new notebooks should start here (the server default if NSLS-II, else base). */
function recommended(app: JupyterFrontEnd): string | null {
  const serverDefault = app.serviceManager.kernelspecs.specs?.default ?? null;
  return recommendedKernel(currentSpecs(app), serverDefault);
}

/** GET /nsls2/api/kernels (the server extension): retired kernels, running builds. */
async function fetchServerInfo(): Promise<IServerInfo> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nsls2/api/kernels');
  try {
    const response = await ServerConnection.makeRequest(url, {}, settings);
    if (!response.ok) {
      return parseServerInfo(null);
    }
    return parseServerInfo(await response.json());
  } catch (reason) {
    console.warn(`${PLUGIN}: ${url} unavailable`, reason);
    return parseServerInfo(null);
  }
}

/** GET /nsls2/api/beamlines: the beamline profiles of the site; null if unavailable. */
async function fetchBeamlines(): Promise<{
  profiles: string[] | null;
  envs: Record<string, string>;
}> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nsls2/api/beamlines');
  try {
    const response = await ServerConnection.makeRequest(url, {}, settings);
    const body = response.ok ? await response.json() : null;
    return { profiles: parseBeamlines(body), envs: parseBeamlineEnvs(body) };
  } catch (reason) {
    console.warn(`${PLUGIN}: ${url} unavailable`, reason);
    return { profiles: null, envs: {} };
  }
}

/** CSS class showing a kernel's logo as a card icon (a rule per logo URL). */
function logoClass(kernelName: string, logo: string | undefined): string {
  if (!logo) {
    return 'jp-nsls2-logo jp-nsls2-nologo';
  }
  const cls = `jp-nsls2-logo-${kernelName.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  let sheet = document.getElementById(cls);
  if (!sheet) {
    sheet = document.createElement('style');
    sheet.id = cls;
    document.head.appendChild(sheet);
  }
  sheet.textContent = `.${cls} { background-image: url(${JSON.stringify(logo)}); }`;
  return `jp-nsls2-logo ${cls}`;
}

function specNamed(app: JupyterFrontEnd, name: unknown): ISpec | undefined {
  return currentSpecs(app).find(s => s.name === name);
}

function addCommands(app: JupyterFrontEnd, browser: IDefaultFileBrowser | null): void {
  const { commands } = app;
  commands.addCommand(CommandIDs.newNotebook, {
    label: args => {
      const spec = specNamed(app, args.kernelName);
      // an env card says the env only: its track and date are on the card's second line
      return spec ? (args.env ? envLabel(spec) : spec.displayName) : String(args.kernelName);
    },
    caption: args => {
      const spec = specNamed(app, args.kernelName);
      return spec ? tooltip(spec) : '';
    },
    iconClass: args => {
      const spec = specNamed(app, args.kernelName);
      const logo = logoClass(String(args.kernelName), spec?.logo);
      return args.env ? `${logo} ${ENV_CARD_CLASS} ${keyClass('env', String(args.env))}` : logo;
    },
    execute: args =>
      commands.execute('notebook:create-new', {
        kernelName: args.kernelName,
        cwd: args.cwd ?? browser?.model.path ?? ''
      })
  });
  commands.addCommand(CommandIDs.newConsole, {
    label: 'NSLS-II console…',
    caption: 'A console on an NSLS-II environment (asks which one)',
    icon: consoleIcon,
    execute: args =>
      // no kernel name: the console asks through the NSLS-II kernel dialog
      commands.execute('console:create', {
        kernelPreference: { shouldStart: true, canStart: true },
        cwd: args.cwd ?? browser?.model.path ?? ''
      })
  });
  commands.addCommand(CommandIDs.beamlineNotebook, {
    label: args => String(args.beamline).toUpperCase(),
    caption: args => {
      const spec = specNamed(app, args.kernelName);
      return (
        `A new notebook for beamline ${args.beamline} on ${spec?.displayName ?? args.kernelName},` +
        ` connected to its data catalog (tiled profile "${args.beamline}")`
      );
    },
    iconClass: args =>
      `${logoClass(String(args.kernelName), specNamed(app, args.kernelName)?.logo)} ` +
      `${BEAMLINE_CARD_CLASS} ${keyClass('beamline', String(args.beamline))}`,
    execute: async args => {
      const spec = specNamed(app, args.kernelName);
      if (!spec) {
        throw new Error(`kernel ${args.kernelName} is not deployed`);
      }
      const beamline = String(args.beamline);
      const cwd = String(args.cwd ?? browser?.model.path ?? '');
      const contents = app.serviceManager.contents;
      const listing = await contents.get(cwd, { content: true });
      const names = (listing.content as { name: string }[]).map(item => item.name);
      const path = PathExt.join(cwd, beamlineFileName(beamline, names));
      await contents.save(path, {
        type: 'notebook',
        format: 'json',
        content: beamlineNotebook(beamline, spec)
      });
      return commands.execute('docmanager:open', {
        path,
        factory: 'Notebook',
        kernel: { name: spec.name }
      });
    }
  });
}

/** Drop the stock per-kernelspec cards of NSLS-II kernels (Notebook and Console). */
function filterStockCards(launcher: ILauncher): void {
  const isNsls2 = (options: ILauncher.IItemOptions) =>
    !!nsls2Of((options.metadata as { kernel?: unknown } | undefined)?.kernel);
  const add = launcher.add.bind(launcher);
  launcher.add = (options: ILauncher.IItemOptions): IDisposable =>
    isNsls2(options) ? new DisposableDelegate(() => undefined) : add(options);
  // cards added before this plugin activated
  const model = launcher as unknown as {
    itemsList?: ILauncher.IItemOptions[];
    stateChanged?: { emit: (v: void) => void };
  };
  if (Array.isArray(model.itemsList)) {
    const kept = model.itemsList.filter(item => !isNsls2(item));
    model.itemsList.splice(0, model.itemsList.length, ...kept);
    model.stateChanged?.emit(undefined);
  }
}

const launcherPlugin: JupyterFrontEndPlugin<void> = {
  id: `${PLUGIN}:launcher`,
  description: 'An NSLS-II launcher section with latest and listed LTS kernels, beamline cards.',
  autoStart: true,
  requires: [ILauncher],
  optional: [IDefaultFileBrowser, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher,
    browser: IDefaultFileBrowser | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyterlab');
    addCommands(app, browser);
    filterStockCards(launcher);
    const decorations: IDecorations = {
      cards: new Map(),
      beamlines: new Map(),
      openKernel: kernelName =>
        void app.commands.execute(CommandIDs.newNotebook, {
          kernelName,
          cwd: browser?.model.path ?? ''
        })
    };
    let cards: DisposableSet | null = null;
    const refresh = async () => {
      const { profiles, envs } = await fetchBeamlines();
      cards?.dispose();
      cards = new DisposableSet();
      const specs = currentSpecs(app);
      decorations.cards.clear();
      decorations.beamlines.clear();
      for (const card of envCards(specs, recommended(app))) {
        decorations.cards.set(keyClass('env', card.env), card);
        cards.add(
          launcher.add({
            command: CommandIDs.newNotebook,
            args: { kernelName: card.kernelName, env: card.env },
            category: CATEGORY,
            categoryRank: -20,
            rank: card.rank
          })
        );
      }
      if (decorations.cards.size) {
        cards.add(
          launcher.add({
            command: CommandIDs.newConsole,
            category: trans.__('Console'),
            rank: -1
          })
        );
      }
      // more envs than a screenful (the section gets a filter box): the few beamline cards
      // go above it, so a scientist reaches their beamline without scrolling past every env
      const beamlineRank = decorations.cards.size > FILTER_FROM ? -30 : -10;
      beamlineCards(specs, profiles, envs).forEach(({ beamline, spec }, index) => {
        decorations.beamlines.set(keyClass('beamline', beamline), {
          env: spec.nsls2!.env,
          label: envLabel(spec)
        });
        cards!.add(
          launcher.add({
            command: CommandIDs.beamlineNotebook,
            args: { beamline, kernelName: spec.name },
            category: BEAMLINE_CATEGORY,
            categoryRank: beamlineRank,
            rank: index
          })
        );
      });
      decorate();
    };
    // the stock launcher renders with React; add the NSLS-II parts once its nodes exist
    let pending = false;
    const decorate = () => {
      if (!pending) {
        pending = true;
        requestAnimationFrame(() => {
          pending = false;
          decorateLaunchers(document.body, decorations);
        });
      }
    };
    new MutationObserver(decorate).observe(document.body, { childList: true, subtree: true });
    const specs = app.serviceManager.kernelspecs;
    void specs.ready.then(() => {
      void refresh();
      specs.specsChanged.connect(() => void refresh());
    });
  }
};

/** Notebook metadata.nsls2 of the document behind a session, read from the server. */
async function notebookBuild(
  app: JupyterFrontEnd,
  sessionContext: ISessionContext
): Promise<INotebookBuild | null> {
  if (sessionContext.type !== 'notebook' || !sessionContext.path) {
    return null;
  }
  try {
    const model = await app.serviceManager.contents.get(sessionContext.path, { content: true });
    const meta = (model.content as { metadata?: Record<string, unknown> })?.metadata?.nsls2;
    return meta && typeof meta === 'object' ? (meta as INotebookBuild) : null;
  } catch {
    return null;
  }
}

/**
 * The session dialogs with an NSLS-II "Select Kernel": envs, not every kernelspec (see
 * picker.ts). A notebook naming an NSLS-II kernel that is no longer deployed is first
 * offered its own env's kernels; one naming a kernel this site never had is told so.
 */
class Nsls2SessionDialogs extends SessionContextDialogs {
  constructor(
    private _app: JupyterFrontEnd,
    options: ISessionContext.IDialogsOptions
  ) {
    super(options);
  }

  async selectKernel(sessionContext: ISessionContext): Promise<void> {
    if (sessionContext.isDisposed) {
      return;
    }
    const name = sessionContext.kernelPreference.name;
    const specs = currentSpecs(this._app);
    let message: string | undefined;
    if (name && !sessionContext.session?.kernel && !specs.some(s => s.name === name)) {
      const [notebook, server] = await Promise.all([
        notebookBuild(this._app, sessionContext),
        fetchServerInfo()
      ]);
      const choice = chooseForMissing(name, notebook, specs, server.retired);
      if (choice.kind === 'same-env') {
        const picked = await retiredDialog(
          choice.title,
          choice.message,
          choice.choices,
          choice.preselected
        );
        if (picked !== 'other') {
          if (picked) {
            await sessionContext.changeKernel({ name: picked });
          }
          return;
        }
      } else {
        message = choice.message;
      }
    }
    const running = sessionContext.session?.kernel?.name ?? null;
    const current = running ?? (name && specs.some(s => s.name === name) ? name : null);
    const autoStartDefault = sessionContext.kernelPreference.autoStartDefault;
    const answer = await pickKernel({
      specs,
      current,
      recommended: recommended(this._app),
      message,
      title: running ? 'Change Kernel' : 'Select Kernel',
      autoStartDefault
    });
    if (!answer || sessionContext.isDisposed) {
      return;
    }
    if (typeof autoStartDefault === 'boolean' && answer.autoStart !== null) {
      sessionContext.kernelPreference = {
        ...sessionContext.kernelPreference,
        autoStartDefault: answer.autoStart
      };
    }
    if (answer.kernel === null) {
      return sessionContext.hasNoKernel ? undefined : sessionContext.shutdown();
    }
    await sessionContext.changeKernel({ name: answer.kernel });
  }
}

/** The same-env dialog: returns a kernel name, 'other' (the kernel dialog) or null. */
async function retiredDialog(
  title: string,
  message: string,
  choices: ISpec[],
  preselected: string | null
): Promise<string | null> {
  const body = new Widget();
  body.addClass('jp-nsls2-retired');
  const text = document.createElement('p');
  text.className = 'jp-nsls2-retired-message';
  text.textContent = `This notebook used ${message}.`;
  body.node.appendChild(text);
  const select = document.createElement('select');
  select.className = 'jp-nsls2-retired-choice';
  if (choices.length) {
    const hint = document.createElement('p');
    hint.textContent = 'Start it on a kernel of the same environment:';
    body.node.appendChild(hint);
    for (const spec of choices) {
      const option = document.createElement('option');
      option.value = spec.name;
      option.textContent = spec.displayName;
      option.title = tooltip(spec);
      option.selected = spec.name === preselected;
      select.appendChild(option);
    }
    body.node.appendChild(select);
  } else {
    const none = document.createElement('p');
    none.textContent = 'No kernel of its environment is deployed any more.';
    body.node.appendChild(none);
  }
  const buttons = [
    Dialog.cancelButton({ label: 'No Kernel' }),
    Dialog.createButton({ label: 'Other kernel…', actions: ['other'] })
  ];
  if (choices.length) {
    buttons.push(Dialog.okButton({ label: 'Start' }));
  }
  const result = await showDialog({ title, body, buttons });
  if (result.button.actions.includes('other')) {
    return 'other';
  }
  return result.button.accept && choices.length ? select.value : null;
}

const dialogsPlugin: JupyterFrontEndPlugin<ISessionContextDialogs> = {
  id: `${PLUGIN}:session-dialogs`,
  description: 'Select Kernel by env (not a flat list); notebooks naming a retired kernel.',
  provides: ISessionContextDialogs,
  optional: [ITranslator, ISettingRegistry],
  autoStart: true,
  activate: (
    app: JupyterFrontEnd,
    translator: ITranslator | null,
    settingRegistry: ISettingRegistry | null
  ) =>
    new Nsls2SessionDialogs(app, {
      translator: translator ?? nullTranslator,
      settingRegistry: settingRegistry ?? null
    })
};

/**
 * Before a notebook picks its kernel: if it names an NSLS-II kernel that is not deployed,
 * drop the language from its kernel preference, so JupyterLab asks (the retired-kernel
 * dialog) instead of silently starting the only kernel of that language.
 */
const retiredGuardPlugin: JupyterFrontEndPlugin<void> = {
  id: `${PLUGIN}:retired-guard`,
  description: 'Notebooks naming a retired NSLS-II kernel always get the dialog.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    tracker.widgetAdded.connect((_, panel) => {
      const context = panel.sessionContext;
      const initialize = context.initialize.bind(context);
      context.initialize = async () => {
        await app.serviceManager.kernelspecs.ready;
        const preference = context.kernelPreference;
        const notebook = (panel.model?.getMetadata('nsls2') as INotebookBuild | undefined) ?? null;
        const names = currentSpecs(app).map(s => s.name);
        if (mustAsk(preference.name, names, notebook)) {
          context.kernelPreference = { ...preference, language: undefined };
        }
        return initialize();
      };
    });
  }
};

/** Status bar: the running kernel's concrete build, marked when a newer one is deployed. */
const buildIndicatorPlugin: JupyterFrontEndPlugin<void> = {
  id: `${PLUGIN}:build-indicator`,
  description: "Shows the running NSLS-II kernel's build date in the status bar.",
  autoStart: true,
  requires: [IStatusBar, INotebookTracker],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar, tracker: INotebookTracker) => {
    const widget = new Widget();
    widget.addClass('jp-nsls2-build');
    // kernel id -> the concrete build it runs: from the server (it reads the process),
    // else the build its spec named when this page first saw the kernel
    const running = new Map<string, string>();
    const firstSeen = new Map<string, string>();
    const render = () => {
      const kernel = tracker.currentWidget?.sessionContext.session?.kernel;
      const specs = currentSpecs(app);
      if (kernel && !firstSeen.has(kernel.id)) {
        const build = specs.find(s => s.name === kernel.name)?.nsls2?.build_id;
        if (build) {
          firstSeen.set(kernel.id, build);
        }
      }
      const shown = kernel
        ? indicator(
            kernel.name,
            running.get(kernel.id) ?? firstSeen.get(kernel.id) ?? null,
            specs
          )
        : null;
      widget.node.textContent = shown?.text ?? '';
      widget.node.title = shown?.title ?? '';
      widget.node.classList.toggle('jp-nsls2-build-newer', !!shown?.newer);
      widget.setHidden(!shown);
    };
    const lookUp = async (force = false) => {
      const kernel = tracker.currentWidget?.sessionContext.session?.kernel;
      if (kernel && (force || !running.has(kernel.id))) {
        const info = await fetchServerInfo();
        for (const [id, build] of info.running) {
          running.set(id, build);
        }
      }
      render();
    };
    // kernels being restarted: the server may still see the old process while the
    // restart is under way, so ask it again once the kernel is idle on the new one
    const restarting = new Set<string>();
    const onStatus = (context: ISessionContext, status: string) => {
      // a restarted latest kernel may be on a newer build: ask again once it is up
      const kernel = context.session?.kernel;
      if (kernel && ['starting', 'restarting', 'autorestarting'].includes(status)) {
        running.delete(kernel.id);
        firstSeen.delete(kernel.id);
        restarting.add(kernel.id);
      }
      const settled = !!kernel && status === 'idle' && restarting.delete(kernel.id);
      void lookUp(settled);
    };
    const onKernel = () => void lookUp();
    let watched: ISessionContext | null = null;
    tracker.currentChanged.connect(() => {
      watched?.kernelChanged.disconnect(onKernel);
      watched?.statusChanged.disconnect(onStatus);
      watched = tracker.currentWidget?.sessionContext ?? null;
      watched?.kernelChanged.connect(onKernel);
      watched?.statusChanged.connect(onStatus);
      void lookUp();
    });
    app.serviceManager.kernelspecs.specsChanged.connect(() => void lookUp(true));
    statusBar.registerStatusItem(`${PLUGIN}:build-indicator`, {
      item: widget,
      align: 'left',
      rank: 5,
      isActive: () => !!tracker.currentWidget
    });
  }
};

/**
 * The notebook toolbar's kernel name, compact ("base · latest") and placed right after the
 * run buttons, so a split view does not push it into the toolbar's "⋯" menu (the stock
 * item at the far right goes there first). Clicking it opens the kernel dialog.
 */
const kernelNamePlugin: JupyterFrontEndPlugin<void> = {
  id: `${PLUGIN}:kernel-name`,
  description: 'A compact NSLS-II kernel name in the notebook toolbar.',
  autoStart: true,
  requires: [INotebookTracker, ISessionContextDialogs],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, dialogs: ISessionContextDialogs) => {
    tracker.widgetAdded.connect((_, panel) => {
      const context = panel.sessionContext;
      const widget = new Widget({ node: document.createElement('button') });
      widget.addClass('jp-nsls2-kernel-name');
      const render = () => {
        const name = context.session?.kernel?.name ?? context.kernelPreference.name;
        const spec = currentSpecs(app).find(s => s.name === name);
        widget.node.textContent = compactKernelName(spec, context.kernelDisplayName);
        widget.node.title = `${spec?.displayName ?? context.kernelDisplayName}: change kernel`;
      };
      widget.node.addEventListener('click', () => void dialogs.selectKernel(context));
      const names = Array.from(panel.toolbar.names());
      const after = ['restart-and-run', 'restart', 'run'].find(n => names.includes(n));
      if (!(after && panel.toolbar.insertAfter(after, 'nsls2-kernel-name', widget))) {
        panel.toolbar.insertItem(0, 'nsls2-kernel-name', widget);
      }
      panel.addClass('jp-nsls2-has-kernel-name');
      context.kernelChanged.connect(render);
      context.sessionChanged.connect(render);
      context.propertyChanged.connect(render);
      app.serviceManager.kernelspecs.specsChanged.connect(render);
      panel.disposed.connect(() =>
        app.serviceManager.kernelspecs.specsChanged.disconnect(render)
      );
      render();
    });
  }
};

/** A latest kernel's restart notice becomes a notification with a Restart button. */
const noticesPlugin: JupyterFrontEndPlugin<void> = {
  id: `${PLUGIN}:restart-notices`,
  description: 'Restart notices of NSLS-II latest kernels as notifications.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    tracker.widgetAdded.connect((_, panel) => watchNotices(panel.sessionContext));
  }
};

export default [
  launcherPlugin,
  dialogsPlugin,
  retiredGuardPlugin,
  buildIndicatorPlugin,
  noticesPlugin,
  kernelNamePlugin,
  memoryNoticePlugin
];
