// Calls through @ai-sdk/google with `ai`'s generateText / streamText, default options, for
// tests/test_gemini_clients.py. Argument: one JSON object {baseURL, apiKey, calls: [{model, mode, prompt}]},
// mode "generate" or "stream". Prints one JSON array, one entry per call:
// {text, finishReason, error: {name, message, statusCode, data, attempts} | null}.
import { createGoogleGenerativeAI } from '@ai-sdk/google';
import { generateText, streamText } from 'ai';

const { baseURL, apiKey, calls } = JSON.parse(process.argv[2]);
const google = createGoogleGenerativeAI({ baseURL, apiKey });

function describe(e) {
  const tries = Array.isArray(e.errors) ? e.errors : null;  // a RetryError holds every attempt's error
  const last = tries && tries.length ? tries[tries.length - 1] : e;
  return { name: e.name, message: String(e.message), statusCode: last.statusCode ?? null, data: last.data ?? null,
           attempts: tries ? tries.length : 1 };
}

const results = [];
for (const { model, mode, prompt } of calls) {
  const out = { text: '', finishReason: null, error: null };
  try {
    if (mode === 'generate') {
      const r = await generateText({ model: google(model), prompt });
      out.text = r.text;
      out.finishReason = r.finishReason;
    } else {
      const r = streamText({ model: google(model), prompt, onError: () => {} });
      for await (const part of r.fullStream) {
        if (part.type === 'text-delta') out.text += part.text;
        else if (part.type === 'finish') out.finishReason = part.finishReason;
        else if (part.type === 'error') out.error = describe(part.error);
      }
    }
  } catch (e) {
    out.error = describe(e);
  }
  results.push(out);
}
console.log(JSON.stringify(results));
