// The HTTP/1 suite again, with diverted flows on the gRPC Tunnel RPC instead of
// the manager's HTTP/2 data plane (the fallback for a manager without one).
process.env.RDBG_AGENT_TRANSPORT = 'grpc';
require('./agent-http1.test');
