package io.github.lora4j.spark;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;

/**
 * The tests' Spark: one {@code local[2]} context for the whole test JVM (Spark allows one active context per JVM,
 * and starting one takes seconds), stopped when the JVM exits.
 */
final class SparkTests {

    private static JavaSparkContext sc;

    private SparkTests() {
    }

    static synchronized JavaSparkContext sc() {
        if (sc == null || sc.sc().isStopped()) {
            sc = new JavaSparkContext(conf("local[2]", "lora4j-tests"));
            JavaSparkContext started = sc;
            Runtime.getRuntime().addShutdownHook(new Thread(started::stop));
        }
        return sc;
    }

    /** A quiet configuration on the loopback interface. */
    static SparkConf conf(String master, String app) {
        return new SparkConf().setMaster(master).setAppName(app)
                .set("spark.ui.enabled", "false")
                .set("spark.ui.showConsoleProgress", "false")
                .set("spark.driver.host", "127.0.0.1")
                .set("spark.driver.bindAddress", "127.0.0.1");
    }
}
