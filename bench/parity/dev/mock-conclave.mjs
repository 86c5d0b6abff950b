#!/usr/bin/env node
// Development-only stand-in for bin/conclave, implementing just the CLI contract that
// compare.mjs uses, on top of llamacpp.mjs and dev/tiny-gguf.mjs. Lets the harness be
// tested end-to-end without the Go CLI. PARITY_MOCK_NOISE=x adds x to every logit of
// positions >= 12 (to check that FAIL is detected).
//   node compare.mjs --bin dev/mock-conclave.mjs --dir /tmp/parity-mock --synth
import {spawnSync} from "node:child_process";
import path from "node:path";
import {fileURLToPath} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const [cmd, ...rest] = process.argv.slice(2);
const flag = (name, def) => { const i = rest.indexOf(name); return i >= 0 ? rest[i + 1] : def; };
const node = (script, args) => {
    const r = spawnSync(process.execPath, [script, ...args], {encoding: "utf8", maxBuffer: 1 << 30});
    if (r.status !== 0) { process.stderr.write(r.stderr); process.exit(r.status ?? 1); }
    return r.stdout;
};
if (cmd === "model" && rest[0] === "synth") {
    node(path.join(here, "tiny-gguf.mjs"), ["--out", flag("--out"), "--experts", flag("--experts", "4"),
        "--top-k", flag("--top-k", "2"), "--seed", flag("--seed", "1")]);
} else if (cmd === "logits") {
    const out = JSON.parse(node(path.join(here, "..", "llamacpp.mjs"), ["--model", flag("--model"), "--tokens", flag("--tokens"),
        "--top", flag("--top", "8"), "--n-predict", "1", "--kv-type", flag("--kv-type", "f16")]));
    const noise = Number(process.env.PARITY_MOCK_NOISE ?? 0);
    const positions = out.positions.map((pos, p) => pos.map((e) => ({id: e.id, logit: e.logit + (p >= 12 ? noise : 0)})));
    console.log(JSON.stringify({positions}));
} else if (cmd === "generate") {
    const toks = flag("--tokens");
    const out = JSON.parse(node(path.join(here, "..", "llamacpp.mjs"), ["--model", flag("--model"), "--tokens", toks,
        "--top", "1", "--n-predict", flag("--max-tokens", "32"), "--kv-type", flag("--kv-type", "f16")]));
    console.log(JSON.stringify({prompt_tokens: toks.split(",").map(Number), tokens: out.greedy, text: ""}));
} else {
    console.error(`mock-conclave: unsupported ${cmd}`);
    process.exit(2);
}
