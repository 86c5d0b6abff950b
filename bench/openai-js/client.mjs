// The official openai npm client against a running conclave API: every
// call a JavaScript user would make, checked for the shapes and semantics
// OpenAI's API has. Exit status 1 on any mismatch.
//   node client.mjs http://127.0.0.1:PORT
import OpenAI from "openai";
import { VERSION } from "openai/version";

const base = process.argv[2];
if (!base) {
  console.error("usage: node client.mjs BASE_URL");
  process.exit(2);
}
const client = new OpenAI({ baseURL: base.replace(/\/$/, "") + "/v1", apiKey: "unused", maxRetries: 0 });

let failures = 0;
let checks = 0;
function check(cond, what, detail) {
  checks++;
  if (!cond) {
    failures++;
    console.error(`FAIL ${what}${detail === undefined ? "" : ": " + JSON.stringify(detail)}`);
  }
}
async function expectError(what, fn, status, param) {
  try {
    await fn();
    check(false, `${what}: no error`);
  } catch (e) {
    check(e instanceof OpenAI.APIError, `${what}: an OpenAI.APIError`, String(e));
    check(e.status === status, `${what}: status ${status}`, e.status);
    check(typeof e.error?.message === "string" && e.error.message.length > 0, `${what}: error.message`, e.error);
    if (param !== undefined) check(e.param === param, `${what}: param ${param}`, e.param);
  }
}

const models = await client.models.list();
const model = models.data[0]?.id;
check(typeof model === "string" && models.data[0].object === "model", "models.list", models.data);
const one = await client.models.retrieve(model);
check(one.id === model, "models.retrieve", one);

// Chat, greedy: non-streaming and streaming agree; usage adds up.
const messages = [{ role: "user", content: "Name a color." }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, ignore_eos: true });
const msg = chat.choices[0];
check(chat.object === "chat.completion" && chat.id.startsWith("chatcmpl-"), "chat object and id", chat);
check(msg.message.role === "assistant" && typeof msg.message.content === "string", "chat message", msg);
check(msg.finish_reason === "length", "chat finish_reason", msg.finish_reason);
check(chat.usage.completion_tokens === 8 && chat.usage.total_tokens === chat.usage.prompt_tokens + 8, "chat usage", chat.usage);

const stream = await client.chat.completions.create({
  model, messages, max_tokens: 8, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true },
});
let text = "";
let role = "";
let finish = null;
let usage = null;
let chunks = 0;
for await (const c of stream) {
  chunks++;
  check(c.object === "chat.completion.chunk", "chunk object", c.object);
  if (c.choices.length === 0) {
    usage = c.usage;
    continue;
  }
  check(c.usage === null, "chunks before the usage chunk carry usage: null", c.usage);
  const d = c.choices[0].delta;
  if (d.role) role = d.role;
  if (d.content) text += d.content;
  if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
}
check(text === msg.message.content, "stream text equals the non-streaming text", [text, msg.message.content]);
check(role === "assistant" && finish === "length" && chunks >= 3, "stream role, finish, chunks", [role, finish, chunks]);
check(usage && usage.completion_tokens === 8 && usage.prompt_tokens === chat.usage.prompt_tokens, "stream usage", usage);

// Chat logprobs.
const lp = await client.chat.completions.create({ model, messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3, ignore_eos: true });
const content = lp.choices[0].logprobs?.content ?? [];
check(content.length === 4, "chat logprobs per token", content.length);
for (const t of content) {
  check(t.logprob <= 0 && Array.isArray(t.bytes) && t.top_logprobs.length === 3, "chat token logprob", t);
}

// Seeded sampling is reproducible, and does sample.
const sampled = async (seed) =>
  (await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 1, top_p: 0.9, seed, ignore_eos: true }))
    .choices[0].message.content;
const [s1, s2] = [await sampled(7), await sampled(7)];
check(s1 === s2, "same seed, same text", [s1, s2]);
const seeds = new Set([s1, await sampled(8), await sampled(9)]);
check(seeds.size >= 2, "seeds 7, 8, 9 give more than one text", [...seeds]);

// Legacy completions with logprobs, and their stream.
const comp = await client.completions.create({ model, prompt: "The expert router", max_tokens: 6, temperature: 0, logprobs: 2, ignore_eos: true });
const cl = comp.choices[0].logprobs;
check(comp.object === "text_completion" && typeof comp.choices[0].text === "string", "completion", comp);
check(cl.tokens.length === 6 && cl.token_logprobs.length === 6 && cl.top_logprobs.length === 6 && cl.text_offset.length === 6, "completion logprobs lengths", cl);
// text_offset: characters (code points) of the tokens before, from 0.
check(cl.text_offset[0] === 0, "text_offset starts at 0", cl.text_offset);
cl.tokens.forEach((tok, i) => {
  check(tok in cl.top_logprobs[i], "the sampled token is among its top_logprobs", [tok, cl.top_logprobs[i]]);
  if (i > 0) {
    check(cl.text_offset[i] - cl.text_offset[i - 1] === [...cl.tokens[i - 1]].length, "text_offset advances by the token's characters", [cl.tokens, cl.text_offset]);
  }
});
let ctext = "";
const stoks = [];
const soffs = [];
for await (const c of await client.completions.create({ model, prompt: "The expert router", max_tokens: 6, temperature: 0, logprobs: 2, ignore_eos: true, stream: true })) {
  ctext += c.choices[0]?.text ?? "";
  stoks.push(...(c.choices[0]?.logprobs?.tokens ?? []));
  soffs.push(...(c.choices[0]?.logprobs?.text_offset ?? []));
}
check(ctext === comp.choices[0].text, "completion stream equals non-stream", [ctext, comp.choices[0].text]);
check(JSON.stringify([stoks, soffs]) === JSON.stringify([cl.tokens, cl.text_offset]), "stream logprobs tokens and offsets equal the response's", [stoks, soffs]);

// A stop string ends the text before it: two printable ASCII characters
// from past the start of the greedy text.
const long = await client.completions.create({ model, prompt: "hello", max_tokens: 24, temperature: 0, ignore_eos: true });
const t24 = long.choices[0].text;
const at = [...Array(Math.max(0, t24.length - 1)).keys()].find((i) => i >= 2 && /^[\x21-\x7e]{2}$/.test(t24.slice(i, i + 2)));
check(at !== undefined, "a printable stop string in the greedy text", t24);
if (at !== undefined) {
  const stop = t24.slice(at, at + 2);
  const cut = await client.completions.create({ model, prompt: "hello", max_tokens: 24, temperature: 0, ignore_eos: true, stop: [stop] });
  const c0 = cut.choices[0];
  check(c0.finish_reason === "stop" && !c0.text.includes(stop) && t24.startsWith(c0.text) && c0.text.length <= at, "stop string", [stop, c0]);
}

// Embeddings: the client asks for base64 unless told otherwise.
const emb = await client.embeddings.create({ model, input: ["hello", "a second text"] });
check(emb.data.length === 2 && emb.data[0].embedding.length > 0 && emb.data[0].embedding.every(Number.isFinite), "embeddings (default encoding)", emb.data.map((d) => d.embedding.length));
const embF = await client.embeddings.create({ model, input: "hello", encoding_format: "float" });
check(embF.data[0].embedding.length === emb.data[0].embedding.length, "embeddings as floats", embF.data[0].embedding.length);
check(embF.data[0].embedding.every((v, i) => Math.abs(v - emb.data[0].embedding[i]) <= 1e-6 * Math.max(1, Math.abs(v))), "base64 and float embeddings agree");

// Errors come back as typed client errors.
await expectError("unknown model", () => client.chat.completions.create({ model: "no-such-model", messages }), 404);
await expectError("temperature out of range", () => client.chat.completions.create({ model, messages, temperature: 3 }), 400, "temperature");
await expectError("empty messages", () => client.chat.completions.create({ model, messages: [] }), 400, "messages");
await expectError("n > 1", () => client.chat.completions.create({ model, messages, n: 2 }), 400, "n");
await expectError("stream with a bad parameter", async () => {
  for await (const _ of await client.chat.completions.create({ model, messages, max_tokens: -1, stream: true })) {
    // no chunk is expected
  }
}, 400, "max_tokens");

// A client that aborts mid-stream leaves the server serving. (openai 6
// ends the iteration quietly on an abort; older versions throw.)
const ac = new AbortController();
let got = 0;
try {
  for await (const _ of await client.chat.completions.create({ model, messages, max_tokens: 200, ignore_eos: true, stream: true }, { signal: ac.signal })) {
    if (++got === 3) ac.abort();
  }
} catch (e) {
  check(e instanceof OpenAI.APIUserAbortError || e.name === "AbortError", "abort", String(e));
}
// Chunks already buffered may still arrive, but not the 200 a whole stream has.
check(got >= 3 && got < 100 && ac.signal.aborted, "the stream stopped soon after the abort", got);
const after = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, ignore_eos: true });
check(after.choices[0].message.content === msg.message.content, "served after an aborted stream", after.choices[0].message.content);

console.log(`openai-js: ${checks - failures}/${checks} checks passed (openai ${VERSION}, model ${model})`);
process.exit(failures ? 1 : 0);
