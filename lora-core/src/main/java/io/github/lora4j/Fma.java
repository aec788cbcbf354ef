package io.github.lora4j;

/** Whether {@link Math#fma} is a machine instruction here; without it the JDK computes it with BigDecimal. */
final class Fma {

    static final boolean INTRINSIC = detect();

    private Fma() { }

    private static boolean detect() {
        try {
            com.sun.management.HotSpotDiagnosticMXBean vm = java.lang.management.ManagementFactory
                    .getPlatformMXBean(com.sun.management.HotSpotDiagnosticMXBean.class);
            return vm != null && Boolean.parseBoolean(vm.getVMOption("UseFMA").getValue());
        } catch (RuntimeException | LinkageError e) {
            return false;
        }
    }
}
