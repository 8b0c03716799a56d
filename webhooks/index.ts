/** The GitHub side: for now, the repository configuration (`.archway.yml` / `.travis.yml`) and its build matrix. */
export * from './repo-config/index.ts';
