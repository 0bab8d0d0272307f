// The page's token wall: when the bundle server has a token file, the page asks for one of its tokens
// (the same check, TokenFile.check: constant time, reloaded with the file). A login form posts the
// token once and the answer keeps it in an HttpOnly, SameSite=Strict cookie scoped to the page's path,
// so that no token is ever in a URL and the page's script cannot read it; a rotated-out token stops
// working at once, since every request is checked against the file's current tokens. An
// `Authorization: Bearer` header works too (for curl and monitoring).
import type { IncomingMessage } from 'node:http';
import { parseCookie, stringifySetCookie } from 'cookie';
import { UI_PATH } from './render-page.js';

/** What the wall needs of the bundle server's tokens (bundles/tokens.ts TokenFile). */
export interface TokenCheck {
  check(authorizationHeader: string | undefined): boolean;
}

export const UI_COOKIE = 'opa_sync_ui';

/** Whether the request may see the page: no wall, a valid bearer header, or a valid cookie. */
export function isAuthorized(req: IncomingMessage, tokens: TokenCheck | undefined): boolean {
  if (tokens === undefined) return true;
  if (req.headers.authorization !== undefined && tokens.check(req.headers.authorization)) return true;
  const token = cookieToken(req.headers.cookie);
  return token !== undefined && tokens.check(`Bearer ${token}`);
}

/** The token kept in the page's cookie, if any. */
export function cookieToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const value = parseCookie(header)[UI_COOKIE];
  return value === undefined || value === '' ? undefined : value;
}

/** Whether a token typed into the login form is one of the token file's. */
export function tokenAccepted(token: string, tokens: TokenCheck): boolean {
  const trimmed = token.trim();
  return trimmed !== '' && !/\s/.test(trimmed) && tokens.check(`Bearer ${trimmed}`);
}

/** The Set-Cookie header that keeps `token` (or, with undefined, removes it). */
export function sessionCookie(token: string | undefined, secure: boolean): string {
  return stringifySetCookie(UI_COOKIE, token?.trim() ?? '', {
    httpOnly: true,
    sameSite: 'strict',
    path: UI_PATH,
    secure,
    ...(token === undefined ? { maxAge: 0 } : {}),
  });
}
