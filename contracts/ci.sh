#!/usr/bin/env bash
# contracts/ci.sh: install the pinned toolchain (npm ci), recompile every contract with the pinned
# solcjs and fail if contracts/artifacts/ differs from the committed artifacts; then check that the
# hardhat@2 local node used by the b3iq-chain integration tests starts and answers offline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

npm ci --no-audit --no-fund
node compile.js --check

# Smoke-test the local chain the Rust tests rely on (free loopback port, killed on exit).
port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});')"
log="$(mktemp)"
./node_modules/.bin/hardhat node --hostname 127.0.0.1 --port "$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
probe='const r=require("http").request({host:"127.0.0.1",port:+process.argv[1],method:"POST",headers:{"content-type":"application/json"}},(res)=>{let b="";res.on("data",(c)=>b+=c);res.on("end",()=>process.exit(JSON.parse(b).result==="0x7a69"?0:1));});r.on("error",()=>process.exit(1));r.end(JSON.stringify({jsonrpc:"2.0",id:1,method:"eth_chainId",params:[]}));'
for _ in $(seq 1 240); do
  if node -e "$probe" "$port" 2>/dev/null; then
    echo "hardhat node ok on 127.0.0.1:$port (chain id 31337)"
    echo "contracts ci: 2 checks passed (artifacts reproducible, local node starts)"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then cat "$log" >&2; echo "hardhat node exited early" >&2; exit 1; fi
  sleep 0.5
done
cat "$log" >&2
echo "hardhat node did not answer within 120 s" >&2
exit 1
