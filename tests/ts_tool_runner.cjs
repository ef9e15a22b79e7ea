// The TypeScript SDK's tool runner against ccproxyd (run by tests/test_threads.py with NODE_PATH set to
// the SDK that `make test` installs in .node-sdk).  Usage: node ts_tool_runner.cjs --stream|--no-stream
// --thread|--no-thread.  Prints one JSON line: the final text, and per request the `thread` field and
// the anthropic-beta header the SDK sent.
'use strict';
const Anthropic = require('@anthropic-ai/sdk').default;
const { betaTool } = require('@anthropic-ai/sdk/helpers/beta/json-schema');

const stream = process.argv.includes('--stream');
const threaded = process.argv.includes('--thread');
const WEATHER = { Paris: 'sunny in Paris', Rome: 'rain in Rome' };
const sent = { threads: [], betas: [] };

async function recordingFetch(url, init) {
  if (String(url).includes('/v1/messages') && init && typeof init.body === 'string') {
    const body = JSON.parse(init.body);
    sent.threads.push(body.thread === undefined ? null : body.thread);
    sent.betas.push(new Headers(init.headers).get('anthropic-beta') || '');
  }
  return fetch(url, init);
}

async function main() {
  const client = new Anthropic({ maxRetries: 0, fetch: recordingFetch });
  const getWeather = betaTool({
    name: 'get_weather',
    description: 'The current weather in a city.',
    inputSchema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    run: async ({ city }) => WEATHER[city],
  });
  const params = {
    model: 'claude-sonnet-4-5',
    max_tokens: 500,
    system: 'You are a weather assistant. Answer in one line.',
    messages: [{ role: 'user', content: 'What is the weather in Paris, and then in Rome?' }],
    tools: [getWeather],
    stream,
  };
  if (!threaded) params.thread = false;
  const runner = client.beta.messages.toolRunner(params);
  let last = null;
  for await (const item of runner) {
    last = stream ? await item.finalMessage() : item;
  }
  const text = last.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
  process.stdout.write(JSON.stringify({ text, ...sent }) + '\n');
}

main().catch((error) => {
  process.stderr.write(String((error && error.stack) || error) + '\n');
  process.exit(1);
});
