/*
 * Entry point of the benchmark kernels' PE image.  The benchmark maps the image without running
 * it and calls the exported kernels directly; DriverEntry only makes the image a well-formed
 * driver (STATUS_SUCCESS, nothing registered).
 */
#ifdef _WIN64
#define NTAPI
#else
#define NTAPI __attribute__((stdcall))
#endif

long NTAPI DriverEntry(void *driver_object, void *registry_path)
{
    (void)driver_object;
    (void)registry_path;
    return 0;
}
