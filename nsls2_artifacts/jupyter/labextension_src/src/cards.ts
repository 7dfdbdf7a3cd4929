/**
 * What JupyterLab's launcher cannot say by itself about an NSLS-II env card: a second line
 * with a "latest" badge and date, the env's listed LTS kernels as "LTS 2026-1" buttons
 * (so one card per env reaches them), the env a beamline card starts, and a filter box
 * over the section when it holds more than a screenful of envs.
 *
 * The stock launcher renders cards from commands (label, icon class); index.ts gives each
 * NSLS-II card an icon class naming its env, and `decorateLaunchers` (run when the DOM
 * changes) adds the extra nodes next to React's. Only DOM work lives here.
 */
import { cardMatches, IEnvCard } from './logic';

export const ENV_CARD_CLASS = 'jp-nsls2-env-card';
export const BEAMLINE_CARD_CLASS = 'jp-nsls2-beamline-card';
export const FILTER_FROM = 12; // envs: more than fits a 1280 x 860 window with the rest

/** The icon class that tells `decorateLaunchers` which env a card is (`key`: env or beamline). */
export function keyClass(kind: string, key: string): string {
  return `jp-nsls2-${kind}--${key.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

export interface IDecorations {
  cards: Map<string, IEnvCard>; // keyClass('env', env) -> card
  beamlines: Map<string, { env: string; label: string }>; // keyClass('beamline', b) -> env
  openKernel: (kernelName: string) => void;
}

function keyOf(card: Element, kind: string): string | null {
  const icon = card.querySelector(`[class*="jp-nsls2-${kind}--"]`);
  const found = Array.from(icon?.classList ?? []).find(c => c.startsWith(`jp-nsls2-${kind}--`));
  return found ?? null;
}

function envLine(card: IEnvCard, open: (kernel: string) => void): HTMLElement {
  const line = document.createElement('div');
  line.className = 'jp-nsls2-card-tracks';
  const latest = document.createElement('span');
  latest.className = `jp-nsls2-badge jp-nsls2-badge-${card.channel === 'lts' ? 'lts' : 'latest'}`;
  latest.textContent = card.channel === 'lts' ? 'LTS' : 'latest';
  const date = document.createElement('span');
  date.className = 'jp-nsls2-card-date';
  date.textContent = card.date;
  const first = document.createElement('div');
  first.className = 'jp-nsls2-card-line';
  first.append(latest, date);
  line.appendChild(first);
  if (card.lts.length) {
    const second = document.createElement('div');
    second.className = 'jp-nsls2-card-line';
    for (const lts of card.lts) {
      const button = document.createElement('button');
      button.className = 'jp-nsls2-badge jp-nsls2-badge-lts jp-nsls2-card-lts';
      button.textContent = `LTS ${lts.label}`;
      button.title = lts.tooltip;
      button.dataset.kernel = lts.kernelName;
      // the card itself opens latest: keep the click (and Enter) from reaching it
      const go = (event: Event) => {
        event.stopPropagation();
        event.preventDefault();
        open(lts.kernelName);
      };
      button.addEventListener('click', go);
      button.addEventListener('keydown', event => {
        if (event.key === 'Enter' || event.key === ' ') {
          go(event);
        }
        event.stopPropagation();
      });
      second.appendChild(button);
    }
    line.appendChild(second);
  }
  return line;
}

function decorateCard(node: HTMLElement, decorations: IDecorations): void {
  const envKey = keyOf(node, 'env');
  const beamlineKey = envKey ? null : keyOf(node, 'beamline');
  const key = envKey ?? beamlineKey;
  if (!key || node.dataset.nsls2 === key) {
    return;
  }
  node.querySelector('.jp-nsls2-card-tracks')?.remove();
  if (envKey) {
    const card = decorations.cards.get(envKey);
    if (!card) {
      return;
    }
    node.appendChild(envLine(card, decorations.openKernel));
    node.dataset.nsls2Env = card.env;
  } else if (beamlineKey) {
    const served = decorations.beamlines.get(beamlineKey);
    if (!served) {
      return;
    }
    const line = document.createElement('div');
    line.className = 'jp-nsls2-card-tracks jp-nsls2-card-env';
    line.textContent = `on ${served.label}`;
    node.appendChild(line);
    node.dataset.nsls2Env = served.env;
  }
  node.dataset.nsls2 = key;
}

function filterBox(section: HTMLElement, decorations: IDecorations): void {
  const cards = Array.from(section.querySelectorAll<HTMLElement>('.jp-LauncherCard'));
  let input = section.querySelector<HTMLInputElement>('input.jp-nsls2-launcher-filter');
  if (cards.length <= FILTER_FROM) {
    input?.remove();
    return;
  }
  if (!input) {
    input = document.createElement('input');
    input.type = 'search';
    input.className = 'jp-nsls2-launcher-filter';
    input.placeholder = `Filter ${cards.length} environments: name, beamline, LTS label`;
    input.setAttribute('aria-label', 'Filter NSLS-II environments');
    const box = input;
    input.addEventListener('input', () => applyFilter(section, box.value, decorations));
    section.querySelector('.jp-Launcher-sectionHeader')?.appendChild(input);
  }
  applyFilter(section, input.value, decorations);
}

function applyFilter(section: HTMLElement, query: string, decorations: IDecorations): void {
  for (const node of Array.from(section.querySelectorAll<HTMLElement>('.jp-LauncherCard'))) {
    const key = keyOf(node, 'env');
    const card = key ? decorations.cards.get(key) : undefined;
    const hide = !!card && !!query && !cardMatches(card, query);
    if (node.hidden !== hide) {
      node.hidden = hide;
    }
  }
}

/** Decorate every NSLS-II card of every launcher in `root` (idempotent, cheap to repeat). */
export function decorateLaunchers(root: HTMLElement, decorations: IDecorations): void {
  for (const node of Array.from(root.querySelectorAll<HTMLElement>('.jp-Launcher .jp-LauncherCard'))) {
    decorateCard(node, decorations);
  }
  for (const icon of Array.from(root.querySelectorAll(`.jp-Launcher-sectionHeader .${ENV_CARD_CLASS}`))) {
    const section = icon.closest('.jp-Launcher-section') as HTMLElement | null;
    if (section) {
      filterBox(section, decorations);
    }
  }
}
