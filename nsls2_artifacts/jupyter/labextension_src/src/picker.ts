/**
 * The NSLS-II kernel dialog (Select Kernel / Change Kernel, a new notebook or console):
 * a search box over every kernel and a short list (the notebook's kernel, the recommended
 * one, one row per env with its older LTS builds folded under it), in place of
 * JupyterLab's flat list of every kernelspec. The rows come from logic.ts `pickerRows`.
 *
 * Used by index.ts (the session dialogs plugin).
 */
import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IPickerRow, IPickerState, ISpec, pickerPreselect, pickerRows } from './logic';

/** The dialog's answer: a kernel name, null for "No Kernel", undefined when cancelled. */
export type PickerAnswer = { kernel: string | null; autoStart: boolean | null } | undefined;

export interface IPickerOptions {
  specs: ISpec[];
  current: string | null; // the kernel the notebook names (always offered)
  recommended: string | null;
  message?: string; // e.g. "This notebook names ... which this site does not have."
  title?: string;
  noKernelLabel?: string;
  autoStartDefault?: boolean; // show JupyterLab's "Always start the preferred kernel"
}

/** The dialog body: search box + rows; `getValue` is the selected kernel name. */
class KernelPicker extends Widget implements Dialog.IBodyWidget<string | null> {
  private _state: IPickerState = { query: '', expanded: new Set(), showAll: false };
  private _selected: string | null;
  private _rows: IPickerRow[] = [];
  private _list: HTMLUListElement;
  private _search: HTMLInputElement;
  accept: () => void = () => undefined;

  constructor(private _options: IPickerOptions) {
    super();
    this.addClass('jp-nsls2-picker');
    if (_options.message) {
      const message = document.createElement('p');
      message.className = 'jp-nsls2-picker-message';
      message.textContent = _options.message;
      this.node.appendChild(message);
    }
    const search = document.createElement('input');
    search.type = 'search';
    search.className = 'jp-nsls2-picker-search';
    search.placeholder = 'Search all kernels: env, beamline, LTS label';
    search.setAttribute('aria-label', 'Search kernels');
    search.addEventListener('input', () => {
      this._state = { ...this._state, query: search.value };
      this._render(true);
    });
    search.addEventListener('keydown', event => this._onKey(event));
    this.node.appendChild(search);
    this._search = search;
    this._list = document.createElement('ul');
    this._list.className = 'jp-nsls2-picker-list';
    this._list.setAttribute('role', 'listbox');
    this.node.appendChild(this._list);
    this._selected = null;
    this._render(true);
  }

  getValue(): string | null {
    return this._selected;
  }

  private _render(reselect: boolean): void {
    const { specs, current, recommended } = this._options;
    this._rows = pickerRows(specs, current, recommended, this._state);
    const names = this._rows.filter(r => r.kind === 'kernel').map(r => r.name);
    if (reselect && (!this._selected || !names.includes(this._selected))) {
      this._selected = this._state.query
        ? (names[0] ?? null)
        : pickerPreselect(this._rows, current, recommended);
    }
    this._list.replaceChildren(...this._rows.map(row => this._item(row)));
    this._list.querySelector('.jp-mod-selected')?.scrollIntoView({ block: 'nearest' });
    // the clicked node is gone: keep the focus in the dialog, so Enter still selects
    if (this._search.isConnected && document.activeElement !== this._search) {
      this._search.focus();
    }
  }

  private _item(row: IPickerRow): HTMLLIElement {
    const item = document.createElement('li');
    item.className = 'jp-nsls2-picker-entry';
    if (row.kind === 'more') {
      item.classList.add('jp-nsls2-picker-more');
      item.setAttribute('role', 'button');
      item.tabIndex = 0;
      item.textContent = row.title;
      item.title = row.detail;
      const show = () => {
        this._state = { ...this._state, showAll: true };
        this._render(false);
      };
      item.addEventListener('click', show);
      item.addEventListener('keydown', e => e.key === ' ' && show());
      return item;
    }
    item.setAttribute('role', 'option');
    item.dataset.kernel = row.name;
    item.classList.toggle('jp-nsls2-picker-older', row.depth > 0);
    item.classList.toggle('jp-mod-selected', row.name === this._selected);
    item.setAttribute('aria-selected', String(row.name === this._selected));
    const title = document.createElement('span');
    title.className = 'jp-nsls2-picker-title';
    title.textContent = row.title;
    item.appendChild(title);
    for (const badge of row.badges) {
      const mark = document.createElement('span');
      mark.className = `jp-nsls2-badge jp-nsls2-badge-${badge.toLowerCase()}`;
      mark.textContent = badge;
      item.appendChild(mark);
    }
    const detail = document.createElement('span');
    detail.className = 'jp-nsls2-picker-detail';
    detail.textContent = row.detail;
    item.appendChild(detail);
    if (row.older > 0 && row.env) {
      const env = row.env;
      const toggle = document.createElement('button');
      toggle.className = 'jp-nsls2-picker-toggle jp-mod-styled';
      toggle.textContent = `${row.expanded ? '▾' : '▸'} Older builds (${row.older})`;
      toggle.setAttribute('aria-expanded', String(row.expanded));
      toggle.title = `The LTS kernels of ${row.title}; type in the search box for unlisted ones`;
      toggle.addEventListener('click', event => {
        event.stopPropagation();
        const expanded = new Set(this._state.expanded);
        if (!expanded.delete(env)) {
          expanded.add(env);
        }
        this._state = { ...this._state, expanded };
        this._render(false);
      });
      item.appendChild(toggle);
    }
    item.addEventListener('click', () => {
      this._selected = row.name;
      this._render(false);
    });
    item.addEventListener('dblclick', () => {
      this._selected = row.name;
      this.accept();
    });
    return item;
  }

  private _onKey(event: KeyboardEvent): void {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') {
      return;
    }
    event.preventDefault();
    const names = this._rows.filter(r => r.kind === 'kernel').map(r => r.name);
    const at = this._selected ? names.indexOf(this._selected) : -1;
    const next = event.key === 'ArrowDown' ? at + 1 : at - 1;
    this._selected = names[Math.max(0, Math.min(names.length - 1, next))] ?? null;
    this._render(false);
  }
}

/** Show the dialog; the answer says which kernel (or none), or undefined if cancelled. */
export async function pickKernel(options: IPickerOptions): Promise<PickerAnswer> {
  const body = new KernelPicker(options);
  const hasCheckbox = typeof options.autoStartDefault === 'boolean';
  const dialog = new Dialog({
    title: options.title ?? 'Select Kernel',
    body,
    buttons: [
      Dialog.cancelButton({ label: 'Cancel' }),
      Dialog.createButton({ label: options.noKernelLabel ?? 'No Kernel', actions: ['no-kernel'] }),
      Dialog.okButton({ label: 'Select', ariaLabel: 'Select Kernel' })
    ],
    focusNodeSelector: 'input.jp-nsls2-picker-search',
    checkbox: hasCheckbox
      ? {
          label: 'Always start the preferred kernel',
          caption: 'Remember my choice and always start the preferred kernel',
          checked: !!options.autoStartDefault
        }
      : null
  });
  body.accept = () => dialog.resolve(2);
  const result = await dialog.launch();
  const autoStart = hasCheckbox ? result.isChecked : null;
  if (result.button.actions.includes('no-kernel')) {
    return { kernel: null, autoStart };
  }
  if (!result.button.accept || !result.value) {
    return undefined;
  }
  return { kernel: result.value, autoStart };
}
