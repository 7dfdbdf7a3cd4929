/**
 * Tell the user when a kernel was stopped at its memory ceiling.
 *
 * The server extension (nsls2_artifacts/jupyter/oom.py) watches each NSLS-II kernel's
 * cgroup and emits a Jupyter server event when it killed the kernel; JupyterLab receives
 * server events through `serviceManager.events`. This plugin turns ours into a
 * notification that stays until dismissed, instead of a silent "kernel died".
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';

export const MEMORY_EVENT = 'https://nsls2.github.io/nsls2-artifacts/events/kernel-memory';

/** The text to show for a server event, or null when the event is not ours. */
export function memoryNotice(event: { schema_id?: unknown; message?: unknown }): string | null {
  if (event.schema_id !== MEMORY_EVENT || typeof event.message !== 'string') {
    return null;
  }
  return event.message;
}

export const memoryNoticePlugin: JupyterFrontEndPlugin<void> = {
  id: 'nsls2-artifacts-lab:memory-notice',
  description: 'Notifies the user when a kernel was stopped at its memory ceiling.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    app.serviceManager.events.stream.connect((_, event) => {
      const text = memoryNotice(event);
      if (text !== null) {
        Notification.error(text, { autoClose: false });
      }
    });
  }
};
