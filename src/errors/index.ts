export { AbortedError } from './aborted-error.ts';
export { ArchwayError } from './archway-error.ts';
export { HostCommandError } from './host-command-error.ts';
export { HostRequirementError } from './host-requirement-error.ts';
export { ImageNotFoundError } from './image-not-found-error.ts';
export { InvalidInputError } from './invalid-input-error.ts';
export { toError } from './to-error.ts';
