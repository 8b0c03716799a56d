/** The human pages of the API (its README section "Pages"): routes, signed links, views. */
export { createPageLinks, type PageKind, type PageLinks, type PageLinksOptions } from './page-links.ts';
export { PageAccessError, pageRoutes, SESSION_COOKIE } from './page-routes.ts';
