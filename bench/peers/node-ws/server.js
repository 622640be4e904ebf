// A plain broadcast WebSocket server, the way a team would write one with Node's `ws`:
// every message the publisher (a connection to /pub) sends is relayed to every other client.
// Usage: node server.js [PORT] (default 9201), listens on 127.0.0.1.
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9201);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, clientTracking: false });
const clients = new Set();

wss.on('connection', (ws, req) => {
  if (req.url === '/pub') {
    ws.on('message', (data, isBinary) => {
      for (const c of clients) c.send(data, { binary: isBinary });
    });
    return;
  }
  clients.add(ws);
  ws.on('close', () => clients.delete(ws));
  ws.on('error', () => clients.delete(ws));
});
wss.on('listening', () => console.log(`node-ws listening on ws://127.0.0.1:${wss.address().port}/`));
