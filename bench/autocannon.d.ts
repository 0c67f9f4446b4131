// Types for the part of autocannon that bench/http.ts uses; the package ships none.
declare module 'autocannon' {
  interface Request {
    headers?: Record<string, string>
  }
  interface Client {
    requestIterator: { setRequests (requests: Request[]): void }
  }
  interface Options {
    url: string
    connections: number
    pipelining: number
    duration: number
    requests: Request[]
    setupClient?: (client: Client) => void
  }
  interface Histogram {
    p50: number
    p99: number
  }
  interface Result {
    errors: number
    timeouts: number
    latency: Histogram
    statusCodeStats: Record<string, { count: number }>
  }
  function autocannon (options: Options): Promise<Result>
  export = autocannon
}
