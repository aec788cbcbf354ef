package io.github.lora4j.spark;

import com.esotericsoftware.kryo.Kryo;
import com.esotericsoftware.kryo.serializers.JavaSerializer;
import org.apache.spark.serializer.KryoRegistrator;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * For applications that set {@code spark.serializer} to Kryo: ND4J arrays then travel (in parallelised
 * collections, shuffles, cached blocks, results) through their own Java serialisation, which Kryo's field-by-field
 * default cannot replace (an ND4J array's data lives off the Java heap: Kryo would deliver an empty shell). Set
 * <pre>
 *   spark.serializer        org.apache.spark.serializer.KryoSerializer
 *   spark.kryo.registrator  io.github.lora4j.spark.LoraKryoRegistrator
 * </pre>
 * Any implementation of {@link INDArray} (every backend's) is covered; {@code DataSet}s and {@code MultiDataSet}s,
 * whose fields are arrays, follow. lora-spark's own messages are plain Java objects that Kryo handles itself.
 */
public final class LoraKryoRegistrator implements KryoRegistrator {

    /** For Spark, which instantiates the class named in {@code spark.kryo.registrator}. */
    public LoraKryoRegistrator() {
    }

    /**
     * Makes Kryo serialise every {@link INDArray} with Java serialisation.
     *
     * @param kryo Spark's Kryo instance
     */
    @Override
    public void registerClasses(Kryo kryo) {
        kryo.addDefaultSerializer(INDArray.class, new JavaSerializer());
    }
}
