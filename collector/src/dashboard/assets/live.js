// The live stream (`/ui/api/live`, Server-Sent Events): one EventSource
// with only the channels the open view shows. The browser's own retry is
// not used: on an error the source is closed and reopened with a backoff
// of 1 s doubling to 30 s, and the view refetches its JSON once the stream
// is back, so an event missed during the gap never leaves a stale page.

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30000;
const EVENTS = ['site', 'server', 'alert', 'heartbeat', 'watchdog'];

export class Live {
  constructor({ onEvent, onResync, onState, onError }) {
    this.onEvent = onEvent;
    this.onResync = onResync;
    this.onState = onState;
    this.onError = onError;
    this.channels = '';
    this.source = null;
    this.timer = null;
    this.backoff = MIN_BACKOFF_MS;
    this.gap = false;
    this.received = 0;
  }

  // Subscribes to `channels` (an array); the same set keeps the stream.
  subscribe(channels) {
    const wanted = [...new Set(channels)].sort().join(',');
    if (wanted === this.channels && (this.source || this.timer)) return;
    this.stop();
    this.channels = wanted;
    if (wanted) this.open();
    else this.onState('idle');
  }

  stop() {
    if (this.source) this.source.close();
    this.source = null;
    clearTimeout(this.timer);
    this.timer = null;
    this.channels = '';
    this.gap = false;
    this.backoff = MIN_BACKOFF_MS;
  }

  open() {
    this.timer = null;
    const src = new EventSource(`/ui/api/live?channels=${encodeURIComponent(this.channels)}`);
    this.source = src;
    this.onState('connecting');
    src.onopen = () => {
      this.backoff = MIN_BACKOFF_MS;
      this.onState('live');
      if (this.gap) {
        this.gap = false;
        this.onResync('reconnected');
      }
    };
    src.onerror = () => {
      if (this.source !== src) return;
      src.close();
      this.source = null;
      this.gap = true;
      const wait = this.backoff;
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      this.onState('reconnecting', wait);
      this.onError();
      this.timer = setTimeout(() => this.open(), wait);
    };
    for (const type of EVENTS) {
      src.addEventListener(type, (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          return;
        }
        this.received += 1;
        this.onEvent(type, data);
      });
    }
    src.addEventListener('resync', () => this.onResync('server dropped events'));
  }
}
