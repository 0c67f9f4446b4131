// Types for the part of the npm package `fernet` (crypto-js) that bench/fernet.ts measures; the package ships none.
declare module 'fernet' {
  export class Secret {
    constructor (secret: string)
  }
  export class Token {
    constructor (options: { secret: Secret, token?: string, ttl?: number })
    decode (token?: string): string
  }
}
