/**
 * Repository config: `.archway.yml` / `.travis.yml` text to the jobs archway runs, with Travis
 * CI's expansion rules. Pure: no I/O, no clock, no Redis.
 */

export type { AptAddon, AptSource } from './apt-addon.ts';
export {
  type ConditionData,
  type ConditionNode,
  ConditionSyntaxError,
  checkCondition,
  evalCondition,
  parseCondition,
} from './conditions.ts';
export { ConfigError, type SourcePosition } from './config-error.ts';
export { configErrorText } from './config-error-text.ts';
export {
  archPool,
  CONFIG_ARCHES,
  type ConfigArch,
  configArch,
  EXPANSION_KEYS,
  type JobEntry,
  OSES,
  type Os,
  PHASES,
  type Phase,
  type StageConfig,
} from './config-schema.ts';
export { type EnvVar, envString, parseEnvString } from './env-vars.ts';
export {
  type BuildEvent,
  DEFAULT_IMAGE,
  type DroppedJob,
  EVENT_TYPES,
  type EventType,
  type ExpandedJob,
  type ExpandOptions,
  type ExpandResult,
  expandMatrix,
  MAX_JOBS,
} from './expand-matrix.ts';
export { expandRepoConfig } from './expand-repo-config.ts';
export { BuildEventRecord, ExpandedJobRecord } from './job-records.ts';
export { canonicalLanguage, type LanguageInfo, languageInfo } from './languages.ts';
export { DEFAULT_YAML_LIMITS, loadYaml, type YamlLimits, type YamlValue } from './load-yaml.ts';
export {
  type IgnoredKey,
  type ParseConfigOptions,
  parseConfig,
  type RepoConfig,
  type RepoSettings,
} from './parse-config.ts';
export {
  buildJobScript,
  defaultBuildDir,
  JOB_EXIT,
  type JobScriptContext,
  travisEnv,
} from './phases.ts';
export { type SlotJobSpecInput, slotJobSpec } from './slot-job-spec.ts';
export { type ImageToolchain, toolchainWarnings } from './toolchain-check.ts';
