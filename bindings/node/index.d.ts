// Type declarations of the `b3iq` package: the generated native declarations (native.d.ts,
// written by @napi-rs/cli from the Rust sources) plus what index.js adds on top.
import type { LocalNodeOptions, LoadModelOptions } from './native'

export * from './native'

/** A chat message for `Runtime.stream`. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant'
  content: string
}

/** Options of `Runtime.stream`. */
export interface StreamOptions {
  /** Model id (default: the first loaded model). */
  model?: string
  /** Most tokens to generate (default 256; `null`: until the end). */
  maxTokens?: number | null
  /** 0 is greedy. */
  temperature?: number
  /** RNG seed for reproducible sampling. */
  seed?: number
  /** Stop sequences. */
  stop?: string[]
}

declare module './native' {
  interface LocalNode {
    /** `baseUrl + "/v1"`: pass it to `new OpenAI({ baseURL })`. */
    readonly openaiBaseUrl: string
    /** `await using node = await LocalNode.start(...)` shuts it down at scope end. */
    [Symbol.asyncDispose](): Promise<void>
  }
  namespace LocalNode {
    /** Starts an embedded host. */
    function start(options: LocalNodeOptions): Promise<LocalNode>
  }
  interface Runtime {
    /** Starts a generation; read it with `for await`. Breaking out cancels the work. */
    stream(prompt: string | ChatMessage[], options?: StreamOptions): Promise<TokenStream>
  }
  namespace Runtime {
    /** A runtime with the GGUF at `path` loaded. */
    function load(path: string, options?: LoadModelOptions & { threads?: number }): Promise<Runtime>
    /** An empty runtime. */
    function create(threads?: number): Promise<Runtime>
  }
  interface TokenStream {
    [Symbol.asyncIterator](): AsyncIterableIterator<string>
    /** Reads the rest of the stream and resolves to the joined text. */
    text(): Promise<string>
  }
}

/** Base class of every error thrown by b3iq. */
export class B3iqError extends Error {
  /**
   * The stable snake_case code of the failure: b3iq-core's, the host's or the runtime's
   * (`invalid_signature`, `replayed`, `weak_password`, `context_length_exceeded`, ...) or the
   * binding's own (`invalid_input`, `io`, `stopped`); null for errors raised by the JS wrapper.
   */
  readonly code: string | null
  constructor(message: string, options?: { code?: string | null; cause?: unknown })
}
/** Malformed or out-of-range input. */
export class B3iqValueError extends B3iqError {}
/** A signature, key, password or audience check failed. */
export class B3iqAuthError extends B3iqError {}
/** Expired or not yet valid. */
export class B3iqExpiredError extends B3iqAuthError {}
/** A replayed job or reused token. */
export class B3iqReplayError extends B3iqAuthError {}
/** Refused by policy. */
export class B3iqPolicyError extends B3iqError {}
/** A file or network operation failed. */
export class B3iqIOError extends B3iqError {}
/** The model runtime failed. */
export class B3iqRuntimeError extends B3iqError {}
/** The host is in the wrong state. */
export class B3iqStateError extends B3iqError {}
