// Errors in OpenAI's JSON shape ({ error: { message, type, param, code } }) with their HTTP status,
// so the official clients raise the matching exception classes.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toJSON() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badParam = (param: string, message: string) => new ApiError(400, message, 'invalid_request_error', param, 'invalid_value');

export const unknownModel = (model: string, served: readonly string[]) =>
  new ApiError(404, `The model \`${model}\` does not exist. Served models: ${served.join(', ')}.`, 'invalid_request_error', 'model', 'model_not_found');

export const badKey = (given: boolean) =>
  new ApiError(
    401,
    given ? 'Incorrect API key provided. Pass the key given to `propipe serve --api-key`.' : 'Missing API key: send `Authorization: Bearer <key>` (the key given to `propipe serve --api-key`).',
    'invalid_request_error',
    null,
    'invalid_api_key',
  );
