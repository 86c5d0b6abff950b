#!/usr/bin/env node
// Reference side of the parity harness: runs a GGUF file through the prebuilt
// llama.cpp CPU backend shipped by node-llama-cpp and prints raw logits.
//
//   node llamacpp.mjs --model F --tokens 1,2,3 [--top 8] [--n-predict 32]
//                     [--kv-type f16|f32] [--flash-attention] [--threads 2]
//                     [--ctx 256] [--full-out FILE]
//
// stdout: one JSON object
//   {"positions":[[{"id","logit"},...],...],   top-K raw logits after each prompt token
//    "greedy":[ids], "margins":[...],           greedy continuation, logit[top1]-logit[top2] per step
//    "flash_attention":bool, "kv_type":"f16", "n_vocab":N, "llama_cpp":"<tag>", ...}
//
// --full-out writes {"positions":[[logit for id 0..n_vocab-1],...], "greedy_steps":[[...],...]}
// (every vocabulary logit, teacher-forced positions and greedy steps) for exact comparisons.
//
// Notes on how this maps onto llama.cpp:
// - Token ids are passed straight to llama_decode (no tokenizer, no BOS insertion).
// - Teacher forcing is one controlledEvaluate call = one llama_decode batch over the whole
//   prompt with logits requested for every position (batchSize >= prompt length).
// - Logits come from llama_get_logits_ith through node-llama-cpp's sampler path; with
//   temperature 0 the sampler chain is only the greedy sampler (no top-k/top-p/temp/penalty
//   stage), which does not modify logits. So the values are raw logits.
// - Greedy decoding is done here (argmax over the raw logits, lowest id wins ties), one
//   token per llama_decode, exactly like an incremental KV-cached generator.
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

function parseArgs(argv) {
    const opts = {top: 8, nPredict: 32, kvType: "f16", flashAttention: false, threads: 2, ctx: 256, fullOut: null};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
            return argv[++i];
        };
        switch (a) {
            case "--model": opts.model = next(); break;
            case "--tokens": opts.tokens = next().split(",").filter((s) => s !== "").map((s) => {
                const n = Number(s);
                if (!Number.isInteger(n) || n < 0) throw new Error(`bad token id ${JSON.stringify(s)}`);
                return n;
            }); break;
            case "--top": opts.top = Number(next()); break;
            case "--n-predict": opts.nPredict = Number(next()); break;
            case "--kv-type": opts.kvType = next().toLowerCase(); break;
            case "--flash-attention": opts.flashAttention = true; break;
            case "--threads": opts.threads = Number(next()); break;
            case "--ctx": opts.ctx = Number(next()); break;
            case "--full-out": opts.fullOut = next(); break;
            case "-h": case "--help":
                console.log(fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1, 16).join("\n"));
                process.exit(0);
            default: throw new Error(`unknown argument ${a}`);
        }
    }
    if (!opts.model) throw new Error("--model is required");
    if (!opts.tokens || opts.tokens.length === 0) throw new Error("--tokens is required");
    if (!["f16", "f32"].includes(opts.kvType)) throw new Error("--kv-type must be f16 or f32");
    return opts;
}

// Dense Float64-free logits vector from node-llama-cpp's Map<token, logit>.
function denseLogits(map, nVocab) {
    const out = new Float32Array(nVocab).fill(Number.NaN);
    for (const [id, v] of map) out[id] = v;
    return out;
}

function topK(logits, k) {
    const ids = Array.from(logits.keys());
    ids.sort((a, b) => (logits[b] - logits[a]) || (a - b));
    return ids.slice(0, k).map((id) => ({id, logit: logits[id]}));
}

function argmaxAndMargin(logits) {
    let best = -1, second = -1;
    for (let i = 0; i < logits.length; i++) {
        const v = logits[i];
        if (best < 0 || v > logits[best]) { second = best; best = i; }
        else if (second < 0 || v > logits[second]) second = i;
    }
    return {id: best, margin: logits[best] - logits[second]};
}

function llamaCppTag() {
    try {
        const p = path.join(path.dirname(fileURLToPath(import.meta.resolve("node-llama-cpp"))), "..", "llama", "llama.cpp.info.json");
        return JSON.parse(fs.readFileSync(p, "utf8")).tag;
    } catch {
        return null;
    }
}

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    const ggmlKv = opts.kvType.toUpperCase(); // "F16" | "F32" (keys of GgmlType)

    const llama = await getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        skipDownload: true,
        progressLogs: false,
        logLevel: LlamaLogLevel.error,
        logger: (level, message) => process.stderr.write(`[llama.cpp ${level}] ${message}\n`),
        maxThreads: opts.threads
    });
    const model = await llama.loadModel({
        modelPath: path.resolve(opts.model),
        gpuLayers: 0,
        useMmap: true,
        defaultContextFlashAttention: opts.flashAttention
    });

    const context = await model.createContext({
        contextSize: Math.max(opts.ctx, opts.tokens.length + opts.nPredict + 1),
        batchSize: Math.max(512, opts.tokens.length),
        sequences: 1,
        threads: {ideal: opts.threads, min: opts.threads},
        flashAttention: opts.flashAttention,
        experimentalKvCacheKeyType: ggmlKv,
        experimentalKvCacheValueType: ggmlKv,
        ignoreMemorySafetyChecks: true,
        failedCreationRemedy: false
    });
    const sequence = context.getSequence();

    const rawLogits = {logits: true, options: {temperature: 0}};

    // (a) teacher forcing: one batch, logits at every position.
    const tf = await sequence.controlledEvaluate(opts.tokens.map((t) => [t, {generateNext: rawLogits}]));
    const full = {positions: [], greedy_steps: []};
    const positions = [];
    let last = null;
    const nVocab = tf[0]?.next?.logits?.size;
    for (let i = 0; i < opts.tokens.length; i++) {
        const map = tf[i]?.next?.logits;
        if (map == null) throw new Error(`no logits for position ${i}`);
        const dense = denseLogits(map, nVocab);
        positions.push(topK(dense, opts.top));
        if (opts.fullOut) full.positions.push(Array.from(dense));
        last = dense;
    }

    // (b) greedy continuation, one token per decode, KV cache reused.
    const greedy = [], margins = [];
    let cur = last;
    for (let step = 0; step < opts.nPredict; step++) {
        const {id, margin} = argmaxAndMargin(cur);
        greedy.push(id);
        margins.push(margin);
        if (opts.fullOut) full.greedy_steps.push(Array.from(cur));
        if (step + 1 === opts.nPredict) break;
        const [res] = await sequence.controlledEvaluate([[id, {generateNext: rawLogits}]]);
        cur = denseLogits(res.next.logits, nVocab);
    }

    const result = {
        positions,
        greedy,
        margins,
        flash_attention: context.flashAttention === true,
        kv_type: opts.kvType,
        kv_cache_types: {k: context.kvCacheKeyType, v: context.kvCacheValueType},
        n_vocab: nVocab,
        threads: opts.threads,
        context_size: context.contextSize,
        batch_size: context.batchSize,
        llama_cpp: llamaCppTag(),
        backend: llama.gpu === false ? "cpu" : String(llama.gpu),
        build_type: llama.buildType
    };
    if (opts.fullOut) fs.writeFileSync(opts.fullOut, JSON.stringify(full));
    process.stdout.write(JSON.stringify(result) + "\n");

    await context.dispose();
    await model.dispose();
    await llama.dispose();
}

main().catch((err) => {
    process.stderr.write(`llamacpp.mjs: ${err?.stack ?? err}\n`);
    process.exit(1);
});
