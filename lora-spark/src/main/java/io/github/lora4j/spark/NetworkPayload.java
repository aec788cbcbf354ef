package io.github.lora4j.spark;

import com.esotericsoftware.kryo.DefaultSerializer;
import com.esotericsoftware.kryo.serializers.JavaSerializer;
import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.util.UUID;

/**
 * A network as it travels to the workers, once per fit (or per {@code output} call), in a Spark broadcast: its JSON
 * configuration and its flat parameter vector ({@code W}, {@code b} and the adapter's starting {@code A}, {@code B}).
 * The updater state stays on the driver.
 *
 * @param id         unique per fit: the key of the workers' network cache
 * @param kind       which DL4J class to rebuild
 * @param json       the configuration's {@code toJson()}
 * @param paramShape shape of the flat parameter vector ({@code [1, numParams]})
 * @param params     the parameters in the network's data type
 *
 * <p>Java-serialised under Kryo too: Kryo 4's field serialiser (Spark's) cannot build records.
 */
@DefaultSerializer(JavaSerializer.class)
record NetworkPayload(String id, NetworkAccess.Kind kind, String json, long[] paramShape, FlatVector params)
        implements Serializable {

    static NetworkPayload of(NetworkAccess net) {
        return new NetworkPayload(UUID.randomUUID().toString(), net.kind(), net.json(), net.params().shape().clone(),
                FlatVector.of(net.params(), net.dataType()));
    }

    /** A new network from this payload (its parameters a fresh copy). */
    NetworkAccess build() {
        return NetworkAccess.build(kind, json, params.toArray(paramShape));
    }

    /** Payload bytes: the parameters and the UTF-8 JSON. */
    long bytes() {
        return params.bytes() + json.getBytes(StandardCharsets.UTF_8).length;
    }
}
