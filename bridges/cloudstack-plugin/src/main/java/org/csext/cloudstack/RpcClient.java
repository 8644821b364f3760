package org.csext.cloudstack;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.ReentrantLock;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.DefaultConsumer;
import com.rabbitmq.client.Envelope;
import com.rabbitmq.client.ShutdownSignalException;

/**
 * One caller of csext's RPC protocol (docs/protocol.md) per broker URL: exchange csext.rpc,
 * routing key = extension, direct reply-to, a correlation id, the x-csext-deadline header (epoch
 * ms) and an AMQP expiration, so that a call nobody takes in time is dropped unrun.
 *
 * One connection, opened on first use and again after it is lost (never a retry loop: a call
 * whose broker is down fails at once). Channels are pooled, each consuming its own direct
 * reply-to, so a login costs one publish and one delivery. Every wait is bounded by the call's
 * deadline: connecting, the lock around connecting, and the reply.
 */
final class RpcClient {
    static final String EXCHANGE = "csext.rpc";
    static final String DIRECT_REPLY_TO = "amq.rabbitmq.reply-to";
    static final String DEADLINE_HEADER = "x-csext-deadline";

    private static final Map<String, RpcClient> CLIENTS = new ConcurrentHashMap<>();
    private static final int HEARTBEAT_SECONDS = 30;
    private static final Log LOG = Log.of(RpcClient.class);

    private final String url;
    private final ReentrantLock connecting = new ReentrantLock();
    private final ConcurrentLinkedDeque<ReplyChannel> idle = new ConcurrentLinkedDeque<>();
    private volatile Connection connection;

    private RpcClient(String url) {
        this.url = url;
    }

    static RpcClient forUrl(String url) {
        return CLIENTS.computeIfAbsent(url, RpcClient::new);
    }

    /** Close every connection (CloudStack stops the adapters on shutdown). */
    static void closeAll() {
        for (RpcClient client : CLIENTS.values()) {
            client.close();
        }
        CLIENTS.clear();
    }

    /**
     * Call {@code extension}'s {@code action} with {@code payload}; the reply, or a failure by
     * {@code deadlineMillis} (epoch ms) at the latest.
     */
    Reply call(String extension, String action, JsonElement payload, long deadlineMillis) throws RpcFailure {
        ReplyChannel channel = checkOut(deadlineMillis);
        try {
            return Reply.parse(channel.call(extension, body(action, payload), deadlineMillis));
        } finally {
            // Back to the pool even after a timeout: a late reply carries the old correlation id
            // and is dropped. A closed channel is left to the garbage collector (never a blocking
            // close on a login's path).
            if (channel.isOpen()) {
                idle.push(channel);
            }
        }
    }

    private static byte[] body(String action, JsonElement payload) {
        JsonObject request = new JsonObject();
        request.addProperty("action", action);
        request.add("payload", payload);
        return request.toString().getBytes(StandardCharsets.UTF_8);
    }

    /**
     * Connect now, in the background, so that the first login does not pay for connecting and
     * class loading. A failure is only logged at DEBUG: calls report their own.
     */
    void warmUp(long deadlineMillis) {
        Thread thread = daemon(() -> {
            try {
                idle.push(checkOut(deadlineMillis));
            } catch (RpcFailure | RuntimeException e) {
                LOG.debug("csext: could not connect ahead of the first call: " + e.getMessage());
            }
        });
        thread.start();
    }

    private ReplyChannel checkOut(long deadlineMillis) throws RpcFailure {
        ReplyChannel pooled;
        while ((pooled = idle.poll()) != null) {
            if (pooled.isOpen()) {
                return pooled;
            }
        }
        Connection open = connection(deadlineMillis);
        try {
            return new ReplyChannel(open.createChannel());
        } catch (IOException | ShutdownSignalException e) {
            throw new RpcFailure("broker-unreachable", "cannot open a channel: " + e.getMessage(), e);
        }
    }

    private Connection connection(long deadlineMillis) throws RpcFailure {
        Connection current = connection;
        if (current != null && current.isOpen()) {
            return current;
        }
        try {
            if (!connecting.tryLock(remaining(deadlineMillis), TimeUnit.MILLISECONDS)) {
                throw new RpcFailure("deadline", "the deadline passed while another call was connecting");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RpcFailure("deadline", "interrupted while waiting to connect");
        }
        try {
            current = connection;
            if (current != null && current.isOpen()) {
                return current;
            }
            idle.clear();
            connection = open(deadlineMillis);
            return connection;
        } finally {
            connecting.unlock();
        }
    }

    private Connection open(long deadlineMillis) throws RpcFailure {
        int timeout = (int) Math.max(1, Math.min(Integer.MAX_VALUE, remaining(deadlineMillis)));
        ConnectionFactory factory = new ConnectionFactory();
        try {
            factory.setUri(url);
        } catch (Exception e) { // URISyntaxException, NoSuchAlgorithmException, KeyManagementException
            throw new RpcFailure("bad-configuration", "broker.url is not an amqp:// URL: " + e.getMessage());
        }
        factory.setConnectionTimeout(timeout);
        factory.setHandshakeTimeout(timeout);
        factory.setRequestedHeartbeat(HEARTBEAT_SECONDS);
        factory.setAutomaticRecoveryEnabled(false);
        factory.setThreadFactory(RpcClient::daemon); // never hold the management server's JVM up
        try {
            return factory.newConnection("csext-cloudstack-plugin");
        } catch (IOException | TimeoutException e) {
            throw new RpcFailure("broker-unreachable",
                    "cannot connect to " + factory.getHost() + ":" + factory.getPort() + ": " + e, e);
        }
    }

    private void close() {
        Connection current = connection;
        connection = null;
        idle.clear();
        if (current != null) {
            try {
                current.abort(1000);
            } catch (RuntimeException e) {
                // already gone
            }
        }
    }

    private static Thread daemon(Runnable work) {
        Thread thread = new Thread(work, "csext-amqp");
        thread.setDaemon(true);
        return thread;
    }

    static long remaining(long deadlineMillis) {
        return deadlineMillis - System.currentTimeMillis();
    }

    /** A channel consuming its own direct reply-to; one call at a time. */
    private static final class ReplyChannel {
        private final Channel channel;
        private volatile String expected;
        private volatile CompletableFuture<byte[]> pending;

        ReplyChannel(Channel channel) throws IOException {
            this.channel = channel;
            channel.addShutdownListener(cause -> {
                CompletableFuture<byte[]> waiting = pending;
                if (waiting != null) {
                    waiting.completeExceptionally(cause);
                }
            });
            channel.basicConsume(DIRECT_REPLY_TO, true, new DefaultConsumer(channel) {
                @Override
                public void handleDelivery(String tag, Envelope envelope, AMQP.BasicProperties properties,
                        byte[] body) {
                    CompletableFuture<byte[]> waiting = pending;
                    if (waiting != null && expected != null && expected.equals(properties.getCorrelationId())) {
                        waiting.complete(body); // a late reply to an earlier call has another id
                    }
                }
            });
        }

        boolean isOpen() {
            return channel.isOpen();
        }

        byte[] call(String extension, byte[] body, long deadlineMillis) throws RpcFailure {
            long left = remaining(deadlineMillis);
            if (left <= 0) {
                throw new RpcFailure("deadline", "the deadline had passed before the call was sent");
            }
            String correlationId = UUID.randomUUID().toString();
            CompletableFuture<byte[]> answer = new CompletableFuture<>();
            expected = correlationId;
            pending = answer;
            try {
                Map<String, Object> headers = Collections.singletonMap(DEADLINE_HEADER, deadlineMillis);
                AMQP.BasicProperties properties = new AMQP.BasicProperties.Builder()
                        .contentType("application/json")
                        .correlationId(correlationId)
                        .replyTo(DIRECT_REPLY_TO)
                        .expiration(Long.toString(left))
                        .headers(headers)
                        .build();
                channel.basicPublish(EXCHANGE, extension, properties, body);
                return answer.get(Math.max(1, remaining(deadlineMillis)), TimeUnit.MILLISECONDS);
            } catch (TimeoutException e) {
                throw new RpcFailure("deadline", "no reply from extension '" + extension + "' within "
                        + left + " ms (is a csext worker running?)");
            } catch (ExecutionException e) {
                throw closed(e.getCause());
            } catch (IOException | ShutdownSignalException e) {
                throw closed(e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new RpcFailure("deadline", "interrupted while waiting for the reply");
            } finally {
                pending = null;
                expected = null;
            }
        }

        private static RpcFailure closed(Throwable cause) {
            return new RpcFailure("channel-closed", "the broker closed the channel: " + cause.getMessage(), cause);
        }
    }
}
