// Declarations of the native addon (src/*.rs). Kept by hand in step with the #[napi] exports;
// test/types.test.js compiles the documented usage against them and test/exports.test.js
// checks that every declared export exists at run time.
/* eslint-disable */

/** Version 1: salted blake3 commitment to prompt bytes (32 bytes). */
export declare function commitPrompt(salt: Buffer, prompt: Buffer): Buffer
/** Version 1: salted blake3 commitment to output bytes (32 bytes). */
export declare function commitOutput(salt: Buffer, output: Buffer): Buffer
/** The 32-byte commitment salt of the receipt for `requestId` (16 bytes), derived from the node's 32-byte secret `nodeSalt`. */
export declare function receiptSalt(nodeSalt: Buffer, requestId: Buffer): Buffer
/** Version 2: commitment to the prompt's token ids (32 bytes). */
export declare function commitPromptTokenIds(salt: Buffer, tokenIds: number[]): Buffer
/** Version 2: commitment to the completion's token ids (32 bytes). */
export declare function commitCompletionTokenIds(salt: Buffer, tokenIds: number[]): Buffer
/** Version 2: commitment to the prompt's UTF-8 text (32 bytes). */
export declare function commitPromptText(salt: Buffer, text: string): Buffer
/** Version 2: commitment to the completion's UTF-8 text (32 bytes). */
export declare function commitCompletionText(salt: Buffer, text: string): Buffer
/** The root over `leaves` without keeping the tree. */
export declare function merkleRoot(leaves: Buffer[]): Buffer
/** The leaf hash of `data` (blake3 of `0x00 || data`). */
export declare function merkleLeafHash(data: Buffer): Buffer
/** True if `proof` (from `MerkleTree.prove`) shows `leaf` at `index` under `root`. */
export declare function verifyInclusion(root: Buffer, leaf: Buffer, index: number, proof: MerkleProof): boolean
/** The payout leaf of an entry. */
export declare function payoutLeaf(entry: PayoutEntry): Buffer
/** True if `proof` shows `entry` under `root`. */
export declare function verifyPayout(root: Buffer, entry: PayoutEntry, proof: Buffer[]): boolean
/** keccak256 of `data`. */
export declare function keccak256(data: Buffer): Buffer
/** Splits `total` micro-units with the default 70/10/15/5 policy. */
export declare function split(total: bigint, hasPublisher?: boolean | undefined | null): Split
/** Decides whether a verified job runs in `mode`. */
export declare function decideJob(kind: JobKindJson, mode: 'local' | 'managed' | 'network', policy?: { auto_approve_up_to: 'low' | 'medium' | null } | undefined | null): PolicyDecision
/** The version of the b3iq crates this addon was built from. */
export declare function version(): string
/** Test-only (not part of the API): throws the error an error of `category` becomes (code `error_probe`). */
export declare function __testingErrorForCategory(category: string): void
/** Test-only (not part of the API): the name of every error category, in b3iq-core's order. */
export declare function __testingErrorCategories(): Array<string>
/** Starts an embedded host. */
export declare function startLocalNode(options: LocalNodeOptions): Promise<LocalNode>
/** An in-process llama.cpp runtime. */
export declare function createRuntime(threads?: number | undefined | null): Promise<Runtime>

/** `{ leaf_count, siblings }` (hex siblings). */
export interface MerkleProof { leaf_count: number; siblings: string[] }
/** `{ index, account: "0x..", amount: "decimal string" }`. */
export interface PayoutEntry { index: number; account: string; amount: string }
/** The four parts of a payment; they always sum to the total. */
export interface Split { host: bigint; publisher: bigint; protocol: bigint; verifier: bigint }
/** A job kind, e.g. `{ type: "restart_runtime" }`. */
export type JobKindJson = { type: string; [field: string]: unknown }
/** The policy's answer. */
export interface PolicyDecision { verdict: 'run' | 'needs_owner_approval' | 'refuse'; risk: 'low' | 'medium' | 'high'; reason: string }
/** Options of `LocalNode.start`. */
export interface LocalNodeOptions { home: string; model?: string | undefined | null; listen?: string | undefined | null }
/** Options of `Runtime.loadModel`. */
export interface LoadModelOptions { modelId?: string | undefined | null; expectedSha256?: string | undefined | null; contextLength?: number | undefined | null }
/** The core's JSON form of an object (see docs/formats.md). */
export type Json = { [field: string]: any }

export declare class NodeKey {
  static generate(): NodeKey
  static fromSeed(seed: Buffer): NodeKey
  static fromKeyFile(data: Buffer): NodeKey
  static load(path: string): NodeKey
  toKeyFile(): Buffer
  secretSeed(): Buffer
  get publicKey(): NodePublicKey
  get nodeId(): NodeId
  sign(message: Buffer): Buffer
  toString(): string
}
export declare class NodePublicKey {
  static fromBytes(data: Buffer): NodePublicKey
  static fromHex(text: string): NodePublicKey
  toBytes(): Buffer
  hex(): string
  get nodeId(): NodeId
  verify(message: Buffer, signature: Buffer): boolean
  equals(other: NodePublicKey): boolean
  toString(): string
}
export declare class NodeId {
  static parse(text: string): NodeId
  static fromBytes(data: Buffer): NodeId
  toBytes(): Buffer
  shortCode(): string
  equals(other: NodeId): boolean
  toString(): string
}
export declare class Receipt {
  static fromJson(value: Json): Receipt
  toJSON(): Json
  sign(key: NodeKey): SignedReceipt
  get totalTokens(): number
  /** 2 with a commitment basis, else 1. */
  get version(): number
  opensTokenIds(salt: Buffer, prompt: number[], completion: number[]): boolean
  opensText(salt: Buffer, prompt: string, completion: string): boolean
}
export declare class SignedReceipt {
  static decode(data: Buffer): SignedReceipt
  static fromJson(value: Json): SignedReceipt
  toJSON(): Json
  /** The version the receipt was signed as (1 or 2). */
  get version(): number
  get bodyBytes(): Buffer
  signingMessage(): Buffer
  get objectHash(): Buffer
  encode(): Buffer
  verify(expected: NodePublicKey): void
  verifySelfCertified(): NodeId
  get receiptId(): Buffer
  get receipt(): Receipt
  get signer(): NodePublicKey
  get signature(): Buffer
  summary(): Json
}
export declare class MerkleTree {
  constructor(leaves: Buffer[])
  static fromLeafHashes(leafHashes: Buffer[]): MerkleTree
  get root(): Buffer
  get length(): number
  prove(index: number): MerkleProof
}
export declare class PayoutTree {
  constructor(entries: PayoutEntry[])
  get root(): Buffer
  entries(): PayoutEntry[]
  proof(claimIndex: number): Buffer[]
}
export declare class SplitPolicy {
  constructor(hostBps: number, publisherBps: number, protocolBps: number, verifierBps: number, noPublisherTo?: 'host' | 'protocol' | 'verifier' | undefined | null)
  split(total: bigint, hasPublisher?: boolean | undefined | null): Split
}
export declare class Credential {
  static parse(text: string, kind?: 'local' | 'support' | 'gateway' | 'setup' | undefined | null): Credential
  static generate(kind: 'local' | 'support' | 'gateway' | 'setup'): Credential
  get kind(): string
  get hint(): string
  exposeSecret(): string
  hashForStorage(): Buffer
  toString(): string
}
export declare class Job {
  static fromJson(value: Json): Job
  toJSON(): Json
  sign(key: NodeKey): SignedJob
}
export declare class SignedJob {
  static decode(data: Buffer): SignedJob
  static fromJson(value: Json): SignedJob
  toJSON(): Json
  get bodyBytes(): Buffer
  signingMessage(): Buffer
  get objectHash(): Buffer
  get signer(): NodePublicKey
  get signature(): Buffer
  verify(expected: NodePublicKey): void
  encode(): Buffer
  get job(): Job
  open(trustRoots: TrustRoots, audience: NodeId, nowMs: number, seen: SeenSet): { job: Json; job_hash: string }
}
export declare class TrustRoots {
  constructor(issuersHex: string[], maxClockSkewMs?: number | undefined | null)
  insert(key: NodePublicKey): void
  get maxClockSkewMs(): number
}
export declare class SeenSet {
  constructor()
}
export declare class ModelManifest {
  static fromJson(value: Json): ModelManifest
  toJSON(): Json
  sign(key: NodeKey): SignedManifest
  get totalSizeBytes(): number
}
export declare class SignedManifest {
  static decode(data: Buffer): SignedManifest
  static fromJson(value: Json): SignedManifest
  toJSON(): Json
  get bodyBytes(): Buffer
  signingMessage(): Buffer
  get objectHash(): Buffer
  get signer(): NodePublicKey
  get signature(): Buffer
  encode(): Buffer
  verify(publisher: NodePublicKey): void
  get manifest(): ModelManifest
}
export declare class PriceSchedule {
  constructor(promptPer1kTokens: number, completionPer1kTokens: number)
  static fromJson(value: Json): PriceSchedule
  toJSON(): Json
  price(promptTokens: number, completionTokens: number): number
}
/** Present when the addon was built with the `host` feature (the default). */
export declare class LocalNode {
  get baseUrl(): string
  get port(): number
  get nodeId(): string
  get setupUrl(): string | null
  claim(username: string, password: string): Promise<void>
  createKey(name: string, scopes?: string[] | undefined | null): Promise<{ id: string; secret: string }>
  receipts(): Promise<Json[]>
  shutdown(): Promise<void>
  get running(): boolean
}
/** Present when the addon was built with the `host` feature (the default). */
export declare class Runtime {
  loadModel(path: string, options?: LoadModelOptions | undefined | null): Promise<Json>
  models(): Promise<Json[]>
  generate(request: Json): Promise<TokenStream>
}
/** A running generation. */
export declare class TokenStream {
  next(): Promise<string | null>
  close(): void
  result(): Promise<Json | null>
}
