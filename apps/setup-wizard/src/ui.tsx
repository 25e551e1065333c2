// Shared building blocks: buttons, fields, notices, copy-to-clipboard, progress bar.
import { useEffect, useId, useRef, useState, type ReactNode } from 'react';
import { ApiError } from './api';

export function Notice({ kind, title, children }: { kind: 'error' | 'info' | 'ok' | 'warn'; title?: string; children?: ReactNode }) {
  return (
    <div className={`notice notice-${kind}`} role={kind === 'error' ? 'alert' : 'status'}>
      {title && <strong className="notice-title">{title}</strong>}
      {children && <div>{children}</div>}
    </div>
  );
}

/** Shows an error from the API with its message; token problems get the reset instructions. */
export function ErrorNotice({ error }: { error: unknown }) {
  if (!error) return null;
  const message = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  return (
    <Notice kind="error" title="That did not work">
      <p>{message}</p>
    </Notice>
  );
}

export function Field({ label, hint, children, htmlFor }: { label: string; hint?: ReactNode; children: ReactNode; htmlFor: string }) {
  return (
    <div className="field">
      <label htmlFor={htmlFor}>{label}</label>
      {children}
      {hint && <div className="field-hint" id={`${htmlFor}-hint`}>{hint}</div>}
    </div>
  );
}

export function CopyButton({ text, label = 'Copy', className = '', ariaLabel }: { text: string; label?: string; className?: string; ariaLabel?: string }) {
  const [state, setState] = useState<'idle' | 'copied' | 'failed'>('idle');
  const timer = useRef<number | undefined>(undefined);
  useEffect(() => () => window.clearTimeout(timer.current), []);
  async function copy() {
    try {
      await navigator.clipboard.writeText(text);
      setState('copied');
    } catch {
      setState('failed');
    }
    window.clearTimeout(timer.current);
    timer.current = window.setTimeout(() => setState('idle'), 2000);
  }
  return (
    <button type="button" className={`btn btn-small ${className}`} onClick={copy} aria-live="polite" aria-label={state === 'idle' ? ariaLabel : undefined}>
      {state === 'copied' ? 'Copied' : state === 'failed' ? 'Select and copy' : label}
    </button>
  );
}

export function CodeBlock({ code, label }: { code: string; label: string }) {
  return (
    <div className="code">
      <div className="code-head">
        <span>{label}</span>
        <CopyButton text={code} label="Copy" ariaLabel={`Copy: ${label}`} />
      </div>
      <pre tabIndex={0} aria-label={label}><code>{code}</code></pre>
    </div>
  );
}

/** A determinate progress bar; width is set through the CSSOM so a strict CSP allows it. */
export function ProgressBar({ value, label }: { value: number; label: string }) {
  const ref = useRef<HTMLDivElement>(null);
  const pct = Math.round(Math.max(0, Math.min(1, value)) * 100);
  useEffect(() => {
    if (ref.current) ref.current.style.width = `${pct}%`;
  }, [pct]);
  return (
    <div className="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
      <div className="progress-fill" ref={ref} />
    </div>
  );
}

export function Spinner({ label }: { label: string }) {
  return <span className="spinner" role="status" aria-label={label} />;
}

export function useUid(prefix: string): string {
  return `${prefix}-${useId().replace(/[^a-zA-Z0-9]/g, '')}`;
}

export function Badge({ tone, children }: { tone: 'ok' | 'warn' | 'muted' | 'bad' | 'accent'; children: ReactNode }) {
  return <span className={`badge badge-${tone}`}>{children}</span>;
}
