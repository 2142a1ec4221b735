// Loaded into every node client the tests run (NODE_OPTIONS=--require): a TCP connection anywhere but
// loopback is refused before any name is looked up, and noted in $KEYLOOM_TEST_NET_LOG for the test to see.
'use strict';
const fs = require('node:fs');
const net = require('node:net');

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|::1|::ffff:127(\.\d{1,3}){3})$/i;
const connect = net.Socket.prototype.connect;

net.Socket.prototype.connect = function (...args) {
  let options = args[0];
  if (Array.isArray(options)) options = options[0];  // node's normalized [options, callback]
  let host;
  if (options !== null && typeof options === 'object') {
    host = options.path ? null : (options.host ?? 'localhost');
  } else if (typeof options === 'number' || /^\d+$/.test(String(options))) {
    host = typeof args[1] === 'string' ? args[1] : 'localhost';
  } else {
    host = null;  // a local (Unix) socket path
  }
  if (host !== null && !LOOPBACK.test(String(host).replace(/^\[|\]$/g, ''))) {
    if (process.env.KEYLOOM_TEST_NET_LOG) fs.appendFileSync(process.env.KEYLOOM_TEST_NET_LOG, `${host}\n`);
    const err = Object.assign(new Error(`connect ECONNREFUSED ${host} (the tests allow loopback only)`),
                              { code: 'ECONNREFUSED' });
    process.nextTick(() => this.destroy(err));
    return this;
  }
  return connect.apply(this, args);
};
