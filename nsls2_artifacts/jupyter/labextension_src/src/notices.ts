/**
 * The restart notice as a JupyterLab notification: a latest kernel whose `latest` link
 * moved shows a display output carrying NOTICE_MIME (agent/kernel_startup.py); this turns
 * it into one notification with a "Restart kernel" button. The output itself is plain
 * text (not stderr), so a stock frontend shows it as a normal line, never a red error box.
 *
 * Wired by index.ts (the notices plugin).
 */
import { ISessionContext, Notification } from '@jupyterlab/apputils';
import { KernelMessage } from '@jupyterlab/services';

export const NOTICE_MIME = 'application/vnd.nsls2.notice+json';

/** The notice's fields the notification needs (see kernel_startup.describe). */
export interface INotice {
  text: string; // the whole notice (the cell's output shows it)
  short: string; // for the notification (JupyterLab cuts toasts at 140 characters)
  build_id: string;
  direction: string; // "newer" | "older"
  env_display_name: string;
}

/** The notice carried by an iopub message, or null for any other message. */
export function noticeOf(msg: KernelMessage.IIOPubMessage): INotice | null {
  if (msg.header.msg_type !== 'display_data') {
    return null;
  }
  const data = (msg.content as { data?: Record<string, unknown> }).data;
  const body = data?.[NOTICE_MIME] as Record<string, unknown> | undefined;
  if (!body || typeof body.text !== 'string') {
    return null;
  }
  const direction = String(body.direction ?? 'newer');
  const name = String(body.env_display_name || 'This environment');
  const created = typeof body.created === 'string' && body.created ? ` (${body.created})` : '';
  const which = direction === 'older' ? 'an older build (rolled back)' : 'a newer build';
  return {
    text: body.text.replace(/^\[NSLS-II\]\s*/, ''),
    short: `${name} latest changed to ${which}${created}. Restart the kernel to use it.`,
    build_id: String(body.build_id ?? ''),
    direction,
    env_display_name: name
  };
}

/** Notify (once per kernel and build) whenever `context`'s kernel sends a notice. */
export function watchNotices(context: ISessionContext): void {
  const shown = new Set<string>();
  context.iopubMessage.connect((_, msg) => {
    const notice = noticeOf(msg as KernelMessage.IIOPubMessage);
    const kernel = context.session?.kernel?.id ?? '';
    if (!notice || shown.has(`${kernel} ${notice.build_id}`)) {
      return;
    }
    shown.add(`${kernel} ${notice.build_id}`);
    const id = Notification.info(notice.short, {
      autoClose: false,
      actions: [
        {
          label: 'Restart kernel',
          caption: `Restart ${context.name || 'this notebook'}'s kernel on the new build`,
          displayType: 'accent',
          callback: () => {
            Notification.dismiss(id);
            void context.restartKernel();
          }
        },
        { label: 'Later', callback: () => Notification.dismiss(id) }
      ]
    });
  });
}
