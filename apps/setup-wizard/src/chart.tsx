// A tiny inline-SVG chart: requests as bars, tokens as a line, over fixed time buckets.
import type { UsagePoint } from './api';

export interface ChartProps {
  points: UsagePoint[];
  /** Bucket length in seconds (3600 for hours). */
  bucketSeconds: number;
  /** Number of buckets to show, ending with the one that contains `now`. */
  buckets: number;
  /** Unix seconds. */
  now: number;
}

export interface Bucket {
  start: number;
  requests: number;
  tokens: number;
}

/** Places the sparse series into a dense, fixed window of buckets (missing buckets are zero). */
export function fillBuckets(points: UsagePoint[], bucketSeconds: number, buckets: number, now: number): Bucket[] {
  const last = Math.floor(now / bucketSeconds) * bucketSeconds;
  const first = last - (buckets - 1) * bucketSeconds;
  const out: Bucket[] = [];
  for (let i = 0; i < buckets; i++) out.push({ start: first + i * bucketSeconds, requests: 0, tokens: 0 });
  for (const p of points) {
    const idx = Math.floor((p.start - first) / bucketSeconds);
    const b = out[idx];
    if (b) {
      b.requests += p.requests;
      b.tokens += p.prompt_tokens + p.completion_tokens;
    }
  }
  return out;
}

const W = 600;
const H = 160;
const PAD_L = 8;
const PAD_R = 8;
const PAD_T = 12;
const PAD_B = 22;

export function UsageChart({ points, bucketSeconds, buckets, now }: ChartProps) {
  const data = fillBuckets(points, bucketSeconds, buckets, now);
  const maxReq = Math.max(1, ...data.map((d) => d.requests));
  const maxTok = Math.max(1, ...data.map((d) => d.tokens));
  const totalReq = data.reduce((s, d) => s + d.requests, 0);
  const totalTok = data.reduce((s, d) => s + d.tokens, 0);
  const innerW = W - PAD_L - PAD_R;
  const innerH = H - PAD_T - PAD_B;
  const slot = innerW / data.length;
  const barW = Math.max(2, slot * 0.62);
  const y = (v: number, max: number) => PAD_T + innerH - (v / max) * innerH;
  const line = data
    .map((d, i) => `${i === 0 ? 'M' : 'L'}${(PAD_L + slot * i + slot / 2).toFixed(1)},${y(d.tokens, maxTok).toFixed(1)}`)
    .join(' ');
  const hourLabel = (t: number) => new Date(t * 1000).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  const summary = `${totalReq} requests and ${totalTok} tokens in the last ${buckets} ${bucketSeconds === 3600 ? 'hours' : 'buckets'}`;
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={summary} data-testid="usage-chart">
        <title>{summary}</title>
        <line className="chart-axis" x1={PAD_L} x2={W - PAD_R} y1={PAD_T + innerH + 0.5} y2={PAD_T + innerH + 0.5} />
        {data.map((d, i) => (
          <rect
            key={d.start}
            className="chart-bar"
            data-requests={d.requests}
            x={PAD_L + slot * i + (slot - barW) / 2}
            y={y(d.requests, maxReq)}
            width={barW}
            height={Math.max(0, PAD_T + innerH - y(d.requests, maxReq))}
            rx={1.5}
          >
            <title>{`${hourLabel(d.start)}: ${d.requests} requests, ${d.tokens} tokens`}</title>
          </rect>
        ))}
        <path className="chart-line" d={line} fill="none" />
        {[0, Math.floor(data.length / 2), data.length - 1].map((i) => {
          const d = data[i];
          if (!d) return null;
          return (
            <text key={i} className="chart-label" x={PAD_L + slot * i + slot / 2} y={H - 6} textAnchor={i === 0 ? 'start' : i === data.length - 1 ? 'end' : 'middle'}>
              {hourLabel(d.start)}
            </text>
          );
        })}
      </svg>
      <figcaption className="chart-legend">
        <span><i className="swatch swatch-bar" /> Requests (peak {maxReq === 1 && totalReq === 0 ? 0 : maxReq}/h)</span>
        <span><i className="swatch swatch-line" /> Tokens (peak {totalTok === 0 ? 0 : maxTok}/h)</span>
        <span className="muted">{totalReq} requests · {totalTok} tokens in 24 h</span>
      </figcaption>
    </figure>
  );
}
