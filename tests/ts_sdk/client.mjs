// The official TypeScript MCP SDK (npm @modelcontextprotocol/sdk, pinned in the repo's
// package.json) connecting to a Jean Memory server as a real client would: its
// StreamableHTTPClientTransport and an OAuthClientProvider do discovery, registration,
// PKCE authorization, the code exchange and token refresh themselves. The person's part
// (sign in, approve) is played here with fetch and a cookie jar, reading the forms the
// server renders, so no browser is needed.
//
// Usage: node client.mjs MCP_URL AUTH_METHOD  (env JM_EMAIL, JM_PASSWORD)
// AUTH_METHOD is the token_endpoint_auth_method the client registers with ("none" or
// "client_secret_basic"). Prints one JSON object on stdout; exits non-zero on any error.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const [mcpUrl, authMethod = 'none'] = process.argv.slice(2);
const email = process.env.JM_EMAIL;
const password = process.env.JM_PASSWORD;
if (!mcpUrl || !email || !password) {
    console.error('usage: JM_EMAIL=... JM_PASSWORD=... node client.mjs MCP_URL [AUTH_METHOD]');
    process.exit(2);
}
// Loopback redirect as a native app (Claude Code, the SDK's own examples) registers it; nothing
// listens there: the person's part below reads the redirect instead of following it.
const REDIRECT_URL = 'http://127.0.0.1:8976/callback';

// Every request the SDK makes (discovery, registration, token, MCP), in order.
const wire = [];
async function loggingFetch(input, init) {
    const response = await fetch(input, init);
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    wire.push({ method: init?.method ?? 'GET', path: url.pathname, status: response.status });
    return response;
}

// --- the person's browser ------------------------------------------------------------------

const cookies = new Map();

function remember(response) {
    for (const line of response.headers.getSetCookie()) {
        const [pair] = line.split(';');
        const eq = pair.indexOf('=');
        cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
}

async function browse(url, init = {}) {
    const headers = new Headers(init.headers);
    if (cookies.size) headers.set('cookie', [...cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    remember(response);
    return response;
}

function unescapeHtml(text) {
    return text
        .replace(/&quot;/g, '"')
        .replace(/&#x27;|&#39;/g, "'")
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&amp;/g, '&');
}

function attributes(tag) {
    const found = {};
    for (const m of tag.matchAll(/([a-zA-Z_:-]+)\s*=\s*("([^"]*)"|'([^']*)')/g)) {
        found[m[1].toLowerCase()] = unescapeHtml(m[3] ?? m[4] ?? '');
    }
    return found;
}

/** The first form on a page: its action and the values a browser would submit for it. */
function readForm(html) {
    const form = html.match(/<form\b[^>]*>([\s\S]*?)<\/form>/i);
    if (!form) throw new Error(`no form on the page: ${html.slice(0, 400)}`);
    const fields = {};
    for (const input of form[1].matchAll(/<input\b[^>]*>/gi)) {
        const a = attributes(input[0]);
        if (a.name) fields[a.name] = a.value ?? '';
    }
    const buttons = [...form[1].matchAll(/<button\b[^>]*>/gi)].map((b) => attributes(b[0]));
    return { action: attributes(form[0]).action ?? '', fields, buttons };
}

async function submit(pageUrl, html, values) {
    const form = readForm(html);
    const target = new URL(form.action, pageUrl);
    const response = await browse(target, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ ...form.fields, ...values })
    });
    return { url: target, response };
}

/** Sign in and approve; returns the parameters of the redirect back to the client. */
async function personApproves(authorizationUrl) {
    let url = authorizationUrl;
    let response = await browse(url);
    for (let step = 0; step < 6; step++) {
        if (response.status >= 300 && response.status < 400) {
            const location = new URL(response.headers.get('location'), url);
            if (location.href.startsWith(REDIRECT_URL)) {
                return Object.fromEntries(location.searchParams);
            }
            if (location.origin !== new URL(authorizationUrl).origin) {
                throw new Error(`redirected to a foreign site: ${location}`);
            }
            url = location;
            response = await browse(url);
            continue;
        }
        const html = await response.text();
        if (response.status !== 200) throw new Error(`page answered ${response.status}: ${html.slice(0, 400)}`);
        const form = readForm(html);
        if ('password' in form.fields) {
            ({ url, response } = await submit(url, html, { email, password }));
        } else if (form.buttons.some((b) => b.name === 'decision' && b.value === 'approve')) {
            ({ url, response } = await submit(url, html, { decision: 'approve' }));
        } else {
            throw new Error(`neither a sign-in nor a consent page: ${html.slice(0, 400)}`);
        }
    }
    throw new Error('the authorization did not come back to the client');
}

// --- the client's OAuth provider: in-memory storage --------------------------------------------

class MemoryProvider {
    constructor() {
        this.client = undefined;
        this.stored = undefined;
        this.verifier = undefined;
        this.discovery = undefined;
        this.authorizationUrl = undefined;
        this.callback = undefined;
        this.expectedState = undefined;
    }
    get redirectUrl() {
        return REDIRECT_URL;
    }
    get clientMetadata() {
        return {
            client_name: 'TypeScript SDK test client',
            redirect_uris: [REDIRECT_URL],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: authMethod
        };
    }
    state() {
        this.expectedState = `ts-${Math.random().toString(36).slice(2)}`;
        return this.expectedState;
    }
    clientInformation() {
        return this.client;
    }
    saveClientInformation(info) {
        this.client = info;
    }
    tokens() {
        return this.stored;
    }
    saveTokens(tokens) {
        this.stored = tokens;
    }
    saveCodeVerifier(verifier) {
        this.verifier = verifier;
    }
    codeVerifier() {
        return this.verifier;
    }
    saveDiscoveryState(state) {
        this.discovery = state;
    }
    discoveryState() {
        return this.discovery;
    }
    invalidateCredentials(scope) {
        if (scope === 'all' || scope === 'client') this.client = undefined;
        if (scope === 'all' || scope === 'tokens') this.stored = undefined;
        if (scope === 'all' || scope === 'verifier') this.verifier = undefined;
        if (scope === 'all' || scope === 'discovery') this.discovery = undefined;
    }
    async redirectToAuthorization(url) {
        this.authorizationUrl = new URL(url);
        this.callback = await personApproves(this.authorizationUrl);
    }
}

// --- the run ----------------------------------------------------------------------------------

function structured(result) {
    if (result.isError) throw new Error(`tool error: ${JSON.stringify(result.content)}`);
    return result.structuredContent;
}

async function main() {
    const provider = new MemoryProvider();
    const client = new Client({ name: 'jean-memory-ts-sdk-test', version: '1.0.0' });
    const transportOptions = { authProvider: provider, fetch: loggingFetch };

    // 1. No token yet: the server's 401 starts discovery, registration and authorization.
    let transport = new StreamableHTTPClientTransport(new URL(mcpUrl), transportOptions);
    let firstError;
    try {
        await client.connect(transport);
    } catch (error) {
        firstError = error;
    }
    if (!(firstError instanceof UnauthorizedError)) {
        throw new Error(`expected UnauthorizedError on the first connect, got ${firstError}`);
    }
    if (!provider.callback?.code) throw new Error(`no code came back: ${JSON.stringify(provider.callback)}`);
    if (provider.callback.state !== provider.expectedState) throw new Error('state did not round-trip');

    // 2. The code exchange, then connect again with the token.
    await transport.finishAuth(provider.callback.code);
    const firstTokens = provider.tokens();
    transport = new StreamableHTTPClientTransport(new URL(mcpUrl), transportOptions);
    await client.connect(transport);

    const tools = (await client.listTools()).tools.map((t) => t.name);
    const fact = 'My sister Ingrid lives in Trondheim and keeps bees';
    const saved = structured(await client.callTool({ name: 'add_memories', arguments: { text: fact } }));
    const found = structured(await client.callTool({ name: 'search_memory', arguments: { query: 'Ingrid bees' } }));

    // 3. The access token goes bad: the SDK must refresh on the 401 and retry by itself.
    provider.saveTokens({ ...firstTokens, access_token: 'expired.or.revoked' });
    const afterRefresh = structured(
        await client.callTool({ name: 'search_memory', arguments: { query: 'Trondheim' } })
    );
    const refreshedTokens = provider.tokens();
    await client.close();

    const authorization = Object.fromEntries(provider.authorizationUrl.searchParams);
    console.log(
        JSON.stringify({
            sdk_protocol_version: transport.protocolVersion,
            server: client.getServerVersion(),
            registration: {
                client_id: provider.client?.client_id,
                token_endpoint_auth_method: provider.client?.token_endpoint_auth_method,
                has_secret: Boolean(provider.client?.client_secret)
            },
            authorization_endpoint: `${provider.authorizationUrl.origin}${provider.authorizationUrl.pathname}`,
            authorization,
            callback: provider.callback,
            tokens: {
                token_type: firstTokens.token_type,
                scope: firstTokens.scope,
                has_refresh_token: Boolean(firstTokens.refresh_token)
            },
            refresh: {
                rotated: refreshedTokens.refresh_token !== firstTokens.refresh_token,
                new_access_token: refreshedTokens.access_token !== firstTokens.access_token &&
                    refreshedTokens.access_token !== 'expired.or.revoked'
            },
            tools,
            fact,
            saved,
            found,
            after_refresh: afterRefresh,
            wire
        })
    );
}

main().catch((error) => {
    console.error(error?.stack ?? String(error));
    console.error(JSON.stringify({ wire }));
    process.exit(1);
});
