#!/usr/bin/env node
// Development-only GGUF writer used to validate llamacpp.mjs before/independently of
// `conclave model synth`. Writes a tiny llama-architecture (Mixtral-style when
// --experts > 0) model with deterministic pseudo-random F32 weights and a minimal
// SentencePiece-style vocabulary. Not used by run.sh.
//
//   node dev/tiny-gguf.mjs --out /tmp/tiny.gguf [--experts 4 --top-k 2] [--seed 1]
import fs from "node:fs";

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
}, []));
const out = args.out ?? "/tmp/tiny.gguf";
const nExpert = Number(args.experts ?? 4);
const nExpertUsed = Number(args["top-k"] ?? 2);
let seed = BigInt(args.seed ?? 1);

const nVocab = 512, nEmbd = 64, nLayer = 2, nHead = 4, nHeadKv = 2, nFf = 128, nCtx = 512;
const headDim = nEmbd / nHead;

// splitmix64 -> uniform in [-1, 1)
function rnd() {
    seed = (seed + 0x9E3779B97F4A7C15n) & 0xFFFFFFFFFFFFFFFFn;
    let z = seed;
    z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & 0xFFFFFFFFFFFFFFFFn;
    z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & 0xFFFFFFFFFFFFFFFFn;
    z = z ^ (z >> 31n);
    return Number(z >> 11n) / 2 ** 53 * 2 - 1;
}

const chunks = [];
const u8 = (v) => { const b = Buffer.alloc(1); b.writeUInt8(v); chunks.push(b); };
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); chunks.push(b); };
const i32 = (v) => { const b = Buffer.alloc(4); b.writeInt32LE(v); chunks.push(b); };
const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); chunks.push(b); };
const f32 = (v) => { const b = Buffer.alloc(4); b.writeFloatLE(v); chunks.push(b); };
const str = (s) => { const b = Buffer.from(s, "utf8"); u64(b.length); chunks.push(b); };

const T = {U8: 0, I32: 5, U32: 4, F32: 6, BOOL: 7, STR: 8, ARR: 9};
const kvs = [];
const kv = (key, type, value, elemType) => kvs.push({key, type, value, elemType});

kv("general.architecture", T.STR, "llama");
kv("general.name", T.STR, "parity-dev-tiny");
kv("general.alignment", T.U32, 32);
kv("llama.context_length", T.U32, nCtx);
kv("llama.embedding_length", T.U32, nEmbd);
kv("llama.block_count", T.U32, nLayer);
kv("llama.feed_forward_length", T.U32, nFf);
kv("llama.attention.head_count", T.U32, nHead);
kv("llama.attention.head_count_kv", T.U32, nHeadKv);
kv("llama.attention.layer_norm_rms_epsilon", T.F32, 1e-5);
kv("llama.rope.freq_base", T.F32, 10000);
kv("llama.rope.dimension_count", T.U32, headDim);
kv("llama.vocab_size", T.U32, nVocab);
if (nExpert > 0) {
    kv("llama.expert_count", T.U32, nExpert);
    kv("llama.expert_used_count", T.U32, nExpertUsed);
}
const tokens = [], scores = [], types = [];
for (let i = 0; i < nVocab; i++) {
    if (i === 0) { tokens.push("<unk>"); types.push(2); }
    else if (i === 1) { tokens.push("<s>"); types.push(3); }
    else if (i === 2) { tokens.push("</s>"); types.push(3); }
    else if (i < 3 + 256) { tokens.push("<0x" + (i - 3).toString(16).toUpperCase().padStart(2, "0") + ">"); types.push(6); }
    else { tokens.push("\u2581t" + i); types.push(1); }
    scores.push(-i);
}
kv("tokenizer.ggml.model", T.STR, "llama");
kv("tokenizer.ggml.tokens", T.ARR, tokens, T.STR);
kv("tokenizer.ggml.scores", T.ARR, scores, T.F32);
kv("tokenizer.ggml.token_type", T.ARR, types, T.I32);
kv("tokenizer.ggml.bos_token_id", T.U32, 1);
kv("tokenizer.ggml.eos_token_id", T.U32, 2);
kv("tokenizer.ggml.unknown_token_id", T.U32, 0);
kv("tokenizer.ggml.add_bos_token", T.BOOL, false);

const tensors = [];
const tensor = (name, dims, scale) => {
    const n = dims.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = scale === "ones" ? 1 + 0.1 * rnd() : rnd() * scale;
    tensors.push({name, dims, data});
};
const s = (fanIn) => 1 / Math.sqrt(fanIn);
tensor("token_embd.weight", [nEmbd, nVocab], 1);
for (let l = 0; l < nLayer; l++) {
    const p = `blk.${l}.`;
    tensor(p + "attn_norm.weight", [nEmbd], "ones");
    tensor(p + "attn_q.weight", [nEmbd, nEmbd], s(nEmbd));
    tensor(p + "attn_k.weight", [nEmbd, nHeadKv * headDim], s(nEmbd));
    tensor(p + "attn_v.weight", [nEmbd, nHeadKv * headDim], s(nEmbd));
    tensor(p + "attn_output.weight", [nEmbd, nEmbd], s(nEmbd));
    tensor(p + "ffn_norm.weight", [nEmbd], "ones");
    if (nExpert > 0) {
        tensor(p + "ffn_gate_inp.weight", [nEmbd, nExpert], s(nEmbd));
        tensor(p + "ffn_gate_exps.weight", [nEmbd, nFf, nExpert], s(nEmbd));
        tensor(p + "ffn_down_exps.weight", [nFf, nEmbd, nExpert], s(nFf));
        tensor(p + "ffn_up_exps.weight", [nEmbd, nFf, nExpert], s(nEmbd));
    } else {
        tensor(p + "ffn_gate.weight", [nEmbd, nFf], s(nEmbd));
        tensor(p + "ffn_down.weight", [nFf, nEmbd], s(nFf));
        tensor(p + "ffn_up.weight", [nEmbd, nFf], s(nEmbd));
    }
}
tensor("output_norm.weight", [nEmbd], "ones");
tensor("output.weight", [nEmbd, nVocab], s(nEmbd));

const writeVal = (type, v) => {
    switch (type) {
        case T.U8: return u8(v);
        case T.I32: return i32(v);
        case T.U32: return u32(v);
        case T.F32: return f32(v);
        case T.BOOL: return u8(v ? 1 : 0);
        case T.STR: return str(v);
        default: throw new Error("type " + type);
    }
};
chunks.push(Buffer.from("GGUF"));
u32(3);
u64(tensors.length);
u64(kvs.length);
for (const {key, type, value, elemType} of kvs) {
    str(key);
    u32(type);
    if (type === T.ARR) {
        u32(elemType);
        u64(value.length);
        for (const v of value) writeVal(elemType, v);
    } else writeVal(type, value);
}
const align = 32;
let off = 0;
for (const t of tensors) {
    str(t.name);
    u32(t.dims.length);
    for (const d of t.dims) u64(d);
    u32(0); // GGML_TYPE_F32
    u64(off);
    off += t.data.byteLength;
    off = Math.ceil(off / align) * align;
}
let header = Buffer.concat(chunks);
const pad = (Math.ceil(header.length / align) * align) - header.length;
const parts = [header, Buffer.alloc(pad)];
for (const t of tensors) {
    const b = Buffer.from(t.data.buffer);
    parts.push(b);
    const p = Math.ceil(b.length / align) * align - b.length;
    if (p) parts.push(Buffer.alloc(p));
}
fs.writeFileSync(out, Buffer.concat(parts));
console.error(`wrote ${out}: vocab=${nVocab} embd=${nEmbd} layers=${nLayer} experts=${nExpert}/${nExpertUsed}`);
